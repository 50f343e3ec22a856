"""``GET /api/services``: the server's services, and how each one's last loop went.

Every service of :mod:`vivace.services`, in their usual order: whether it is enabled and how
often it loops (under this server's settings: the process that runs the services, ``vivace server
services start`` when the API is scaled out, should be given the same), then what its
``service_state`` row says of its last loop, wherever it ran: when, how long it took, its summary
or its error. A service that never looped has no last loop; one whose last loop is much older
than its interval is not running anywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vivace.server import deps
from vivace.server.api.models import error_responses

router = APIRouter()

DatabaseUrl = Annotated[str, Depends(deps.database_url)]


class ServiceStatus(BaseModel):
    """A server service and its last loop."""

    name: str = Field(examples=["scheduler"])
    description: str
    enabled: bool = Field(description="Whether it runs at all under the server's settings.")
    interval_seconds: float = Field(description="Seconds between its loops.")
    last_loop: dt.datetime | None = Field(
        default=None, description="When its last loop started (null: it never looped)."
    )
    seconds: float | None = Field(default=None, description="How long its last loop took.")
    summary: str | None = Field(
        default=None,
        description="What its last loop did, if anything.",
        examples=["created 3 runs"],
    )
    error: str | None = Field(default=None, description="How its last loop failed, if it did.")


@router.get(
    "/services",
    response_model=list[ServiceStatus],
    tags=["services"],
    responses=error_responses(503),
)
def list_services(database_url: DatabaseUrl) -> list[ServiceStatus]:
    """Every service: enabled, interval, and its last loop's time, duration, summary or error."""
    from vivace.services import load_services
    from vivace.settings import get_settings
    from vivace.store.service_state import read_service_states

    settings = get_settings()
    loops = {
        state.name: state.data.get("loop") or {} for state in read_service_states(database_url)
    }
    return [
        ServiceStatus(
            name=service.name,
            description=service.description,
            enabled=service.enabled(settings),
            interval_seconds=service.interval(settings),
            **_last_loop(loops.get(service.name, {})),
        )
        for service in load_services()
    ]


def _last_loop(loop: dict[str, Any]) -> dict[str, Any]:
    """The last-loop fields from what ``vivace.services.runner`` records."""
    started = loop.get("last_loop")
    return {
        "last_loop": None if started is None else dt.datetime.fromtimestamp(started, dt.UTC),
        "seconds": loop.get("seconds"),
        "summary": loop.get("summary"),
        "error": loop.get("error"),
    }
