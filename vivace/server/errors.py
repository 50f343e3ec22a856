"""Error responses: every bad request is a 4xx with a clear message, never a 500."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""
