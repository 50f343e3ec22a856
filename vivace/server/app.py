"""The ASGI application: ``create_app()`` wires the API, the UI, /metrics and access control."""

from __future__ import annotations

from vivace.exceptions import MissingExtraError

try:
    from fastapi import FastAPI
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError(
        "vivace's server needs the 'server' extra: pip install 'vivace[server]'"
    ) from error

from vivace import __version__
from vivace.server import auth, errors, metrics
from vivace.server.api import router as api_router
from vivace.server.ui import router as ui_router
from vivace.settings import get_settings


def create_app(
    database_url: str | None = None, *, local_hosts_only_while_open: bool = False
) -> FastAPI:
    """The server for the database at ``database_url`` (default: the configured one).

    ``local_hosts_only_while_open``: while no API key exists, answer only requests addressed to
    ``localhost`` or an IP address (against DNS rebinding; ``vivace.server.auth`` says more).
    """
    url = database_url or get_settings().resolved_database_url
    app = FastAPI(
        title="vivace",
        version=__version__,
        description="Run history of vivace flows: flows, flow runs, task runs, states and logs.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.database_url = url
    errors.install(app)
    auth.install(app, local_hosts_only_while_open=local_hosts_only_while_open)
    metrics.install(app)  # after auth: its latency middleware wraps access control
    app.include_router(api_router.router, prefix="/api")
    app.include_router(metrics.router)
    app.include_router(ui_router.router)
    app.mount("/static", ui_router.static_files(), name="static")
    return app
