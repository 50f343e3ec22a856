"""Dependencies shared by the API and the UI."""

from __future__ import annotations

from fastapi import Request


def database_url(request: Request) -> str:
    """The URL of the database this server reads (set by ``create_app``)."""
    url: str = request.app.state.database_url
    return url
