"""``GET /api/flows``: the flows in the run history, each with its number of runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from vivace.server import deps
from vivace.server.api.models import Flow, error_responses
from vivace.server.api.params import Limit, NameLike
from vivace.store import queries

router = APIRouter(tags=["flows"])


@router.get("/flows", response_model=list[Flow], responses=error_responses(422, 503))
def list_flows(
    database_url: Annotated[str, Depends(deps.database_url)],
    name_like: NameLike = None,
    limit: Limit = queries.MAX_LIMIT,
) -> list[Flow]:
    """Flows ordered by name, optionally only those whose name contains ``name_like``."""
    records = queries.read_flows(database_url, name_like=name_like, limit=limit)
    counts = queries.count_flow_runs_per_flow(database_url, [record.id for record in records])
    return [Flow.from_record(record, counts[record.id]) for record in records]
