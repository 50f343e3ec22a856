"""The web UI: server-rendered pages, the JSON endpoints that keep a running flow's page live,
sign-in, and the static files (CSS, the one small script, the icon) under ``/static``.

Every page reads the run history through the store's read helpers, on FastAPI's thread pool.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.staticfiles import StaticFiles

from vivace.server.ui import (
    concurrency,
    dashboard,
    deployments,
    flow_run,
    flow_runs,
    flows,
    notifications,
    signin,
    task_runs,
    work_queues,
)

STATIC_DIR = Path(__file__).with_name("static")

router = APIRouter(include_in_schema=False)
router.include_router(dashboard.router)
router.include_router(flows.router)
router.include_router(flow_runs.router)
router.include_router(flow_run.page_router)
router.include_router(flow_run.live_router)
router.include_router(task_runs.page_router)
router.include_router(task_runs.live_router)
router.include_router(deployments.router)
router.include_router(work_queues.router)
router.include_router(concurrency.router)
router.include_router(notifications.router)
router.include_router(signin.router)


def static_files() -> StaticFiles:
    """The UI's static files, for ``app.mount("/static", ...)``."""
    return StaticFiles(directory=STATIC_DIR)
