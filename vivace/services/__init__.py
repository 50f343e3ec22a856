"""The server's services: loops that keep the run history moving without anybody asking.

=================  ==============================================================================
``scheduler``      creates the Scheduled runs of deployments' active schedules, ahead of time
``late_runs``      marks Scheduled runs that did not start in time Late, and skips the too late
``zombies``        marks CRASHED the RUNNING flow runs whose heartbeat stopped
``notifications``  sends the notifications of flow runs' states to webhooks, with retries
``retention``      deletes flow runs older than ``VIVACE_RETENTION_DAYS`` (off by default)
=================  ==============================================================================

They run inside ``vivace server start`` (unless ``VIVACE_SERVER_SERVICES=false``), or alone with
``vivace server services start`` when the API is scaled out. ``load_services()`` imports them;
:mod:`vivace.services.runner` runs them.
"""

from __future__ import annotations

import importlib

from vivace.services.base import Service

SERVICE_MODULES = ("scheduler", "late_runs", "zombies", "notifications", "retention")


def load_services(names: tuple[str, ...] | None = None) -> list[Service]:
    """The services named (all when None), in the order of ``SERVICE_MODULES``.

    Raises ValueError naming the unknown ones.
    """
    unknown = sorted(set(names or ()) - set(SERVICE_MODULES))
    if unknown:
        raise ValueError(
            f"no service named {', '.join(map(repr, unknown))}; "
            f"expected one of {', '.join(SERVICE_MODULES)}"
        )
    wanted = [name for name in SERVICE_MODULES if names is None or name in names]
    return [importlib.import_module(f"vivace.services.{name}").SERVICE for name in wanted]


__all__ = ["SERVICE_MODULES", "Service", "load_services"]
