"""Access control: API keys with a role, ``read`` or ``admin``."""

from __future__ import annotations

from fastapi import FastAPI


def require_read() -> None:
    """Dependency of every read endpoint and page: a key with role read or admin, if keys exist."""


def require_admin() -> None:
    """Dependency of every write endpoint: a key with role admin, if keys exist."""


def install(app: FastAPI) -> None:
    """Set up access control on ``app``."""
