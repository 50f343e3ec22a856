"""``GET /api/health``: is the server up, and can it reach its database?

Open to everyone (access control exempts it), for load balancers and ``docker healthcheck``; so
a failure says only that the database cannot be reached, and the server's log says why.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends

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
