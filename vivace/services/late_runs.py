"""Placeholder: replaced by the issue-7 work on the late_runs service (it must not land as is)."""

from __future__ import annotations

from vivace.services.base import Service


def _loop(url: str) -> str | None:
    return None


SERVICE = Service(
    name="late_runs",
    description="(placeholder)",
    loop=_loop,
    interval=lambda settings: 60.0,
)
