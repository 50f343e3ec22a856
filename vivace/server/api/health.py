"""``GET /api/health``: is the server up, and can it reach its database? ``GET /api/health/live``:
does the process answer at all?

Open to everyone (access control exempts both), for load balancers, ``docker healthcheck`` and
Kubernetes probes; so a failure says only that the database cannot be reached, and the server's log
says why. ``/live`` touches no database: a liveness probe on it does not restart every replica
while the database is down (readiness, on ``/api/health``, takes them out of service instead).
"""

from __future__ import annotations

from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from vivace import __version__
from vivace.server import deps
from vivace.server.api.models import Health, error_responses
from vivace.store.database import connect, get_engine

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses=error_responses(503))
def health(database_url: Annotated[str, Depends(deps.database_url)]) -> Health:
    """The server's version, once a trivial query has gone through to the database."""
    with connect(get_engine(database_url)) as conn:
        conn.execute(sa.select(1)).scalar_one()
    return Health(status="ok", version=__version__, database="ok")


class Liveness(BaseModel):
    """The server's process answers (its database is not asked)."""

    status: Literal["ok"]
    version: str


@router.get("/health/live", response_model=Liveness)
def live() -> Liveness:
    """The server's version, without touching the database."""
    return Liveness(status="ok", version=__version__)
