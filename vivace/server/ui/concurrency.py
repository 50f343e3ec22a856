"""Placeholder: filled in by the issue-7 work on concurrency."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vivace.server import auth
from vivace.server.ui.routing import PageRoute

router = APIRouter(route_class=PageRoute, dependencies=[Depends(auth.require_read)])
