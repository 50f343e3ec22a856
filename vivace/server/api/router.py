"""All API routes, under one router that requires a read key."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vivace.server import auth

router = APIRouter(dependencies=[Depends(auth.require_read)])
