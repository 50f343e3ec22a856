"""All API routes, under one router that requires a read key.

Each module holds the routes of one resource; this one only puts them together.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vivace.server import auth
from vivace.server.api import (
    concurrency,
    deployments,
    flow_run_control,
    flow_runs,
    flows,
    health,
    logs,
    notifications,
    schedules,
    services,
    task_runs,
    work_queues,
    workers,
)

router = APIRouter(dependencies=[Depends(auth.require_read)])
router.include_router(health.router)
router.include_router(flows.router)
router.include_router(flow_runs.router)
router.include_router(logs.router)
router.include_router(task_runs.router)
router.include_router(deployments.router)
router.include_router(flow_run_control.router)
router.include_router(work_queues.router)
router.include_router(workers.router)
router.include_router(schedules.router)
router.include_router(concurrency.router)
router.include_router(notifications.router)
router.include_router(services.router)
