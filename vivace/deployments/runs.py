"""Creating runs of a deployment on demand, and waiting for one to end.

:func:`create_run` is the one way a run of a deployment is made, from the command line, from
Python and by the API's ``POST /api/deployments/{id}/runs``: the deployment must exist, the
run's parameters (the deployment's defaults updated with the given ones) are checked against its
schema *before* anything is written, so a bad parameter (``ParameterValidationError`` naming the
field) creates no run, and the run is created SCHEDULED in the deployment's work queue, where a
worker claims it.

:func:`run_deployment` is the Python face of it::

    import vivace

    run = vivace.run_deployment("nightly-etl", parameters={"day": 3})  # SCHEDULED, returns at once
    run = vivace.run_deployment("nightly-etl", timeout=600)  # waits up to 10 min for it to end
    run.state_type  # StateType.COMPLETED, or still SCHEDULED/RUNNING when the timeout passed

With ``VIVACE_API_URL`` set it goes through that server instead (``POST
/api/deployments/{id}/runs``, which makes the same checks), for a machine that reaches the server
but not its database.
Waiting polls, often at first (every 0.05 s) then less (up to every second), so a short run is
seen ending at once and a long one costs one query a second.

This module is imported by ``import vivace``: the store is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vivace.exceptions import ConfigurationError

if TYPE_CHECKING:
    from vivace.store.records import FlowRunRecord

_FIRST_POLL = 0.05
_MAX_POLL = 1.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_IDEMPOTENCY_KEY = 255


def run_deployment(
    name: str | uuid.UUID,
    parameters: dict[str, Any] | None = None,
    timeout: float | None = None,
    *,
    start_in: float | dt.timedelta | None = None,
    idempotency_key: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
) -> FlowRunRecord:
    """Create a run of the deployment ``name`` (a name or an id); return the flow run.

    ``parameters`` update the deployment's defaults and are checked at once
    (``ParameterValidationError`` naming the field; no run is created). The run waits in the
    deployment's work queue for a worker, from now or ``start_in`` (seconds or a timedelta)
    from now. With ``timeout`` (seconds) this waits until the run ends or the timeout passes,
    and returns the run as it is then: check ``run.state_type``. A second call with the same
    ``idempotency_key`` creates nothing and returns the first call's run. ``tags`` replace the
    deployment's tags on the run.

    With ``VIVACE_API_URL`` set, the run is created (and waited for) through that vivace server,
    with the admin key in ``VIVACE_API_KEY``; otherwise straight in the database.
    """
    from vivace.settings import get_settings

    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0
    ):
        raise ConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    delay = _delay(start_in)
    settings = get_settings()
    read: Callable[[uuid.UUID], FlowRunRecord | None]
    if settings.api_url:
        from vivace.client import VivaceClient

        _check_run_options(idempotency_key, tags)
        client = VivaceClient.from_settings()
        run, _ = client.create_deployment_run(
            str(name),
            parameters=parameters,
            start_in_seconds=delay,
            idempotency_key=idempotency_key,
            tags=tags,
        )
        read = client.read_flow_run
    else:
        from vivace.store.queries import read_flow_run

        url = settings.resolved_database_url
        run, _ = create_run(
            url,
            name,
            parameters,
            expected_start_time=None if delay is None else time.time() + delay,
            idempotency_key=idempotency_key,
            tags=tags,
        )
        read = functools.partial(read_flow_run, url)
    if timeout is None:
        return run
    return wait_for_flow_run(read, run.id, timeout)


def create_run(
    url: str,
    deployment: str | uuid.UUID,
    parameters: dict[str, Any] | None = None,
    *,
    expected_start_time: float | None = None,
    idempotency_key: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    name: str | None = None,
) -> tuple[FlowRunRecord, bool]:
    """Create a SCHEDULED run of the deployment (name or id) with these parameters; return it and
    whether it is new (False: the ``idempotency_key`` was used before, that run is returned).
    ``name`` is the run's name (default: a random one).

    The run an idempotency key made is looked up before the parameters are checked, so a retry
    gets its run even when a redeploy changed the schema since. Raises DeploymentNotFoundError,
    ConfigurationError for a bad key or tags, and ParameterValidationError (no run created) when
    the parameters do not match the deployment's schema.
    """
    from vivace.deployments.parameters import run_parameters
    from vivace.store.deployments import (
        create_deployment_run,
        read_run_by_idempotency_key,
        require_deployment,
    )

    checked_tags = _check_run_options(idempotency_key, tags)
    record = require_deployment(url, deployment)
    if idempotency_key is not None:
        existing = read_run_by_idempotency_key(url, record.id, idempotency_key)
        if existing is not None:
            return existing, False
    merged = run_parameters(record, parameters)
    return create_deployment_run(
        url,
        record,
        parameters=merged,
        expected_start_time=expected_start_time,
        idempotency_key=idempotency_key,
        tags=checked_tags,
        name=name,
    )


def wait_for_flow_run(
    read: Callable[[uuid.UUID], FlowRunRecord | None], flow_run_id: uuid.UUID, timeout: float
) -> FlowRunRecord:
    """The flow run once it has ended, or as it is when ``timeout`` seconds have passed;
    ``read`` reads it (from the database or through a server)."""
    from vivace.engine.states import FINAL_TYPES
    from vivace.exceptions import FlowRunStateError

    deadline = time.monotonic() + timeout
    pause = _FIRST_POLL
    while True:
        run = read(flow_run_id)
        if run is None:
            raise FlowRunStateError(f"flow run {str(flow_run_id)!r} is no longer in the history")
        left = deadline - time.monotonic()
        if run.state_type in FINAL_TYPES or left <= 0:
            return run
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, _MAX_POLL)


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or plain ``"45"``."""
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = _DURATION_PART.findall(cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise ConfigurationError(
                f"duration {text!r} is not valid; expected e.g. 90s, 10m, 2h, 1d or 1h30m"
            ) from None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not 0 <= seconds < float("inf"):
        raise ConfigurationError(f"duration {text!r} is not valid; expected 0 or more seconds")
    return seconds


def _delay(start_in: float | dt.timedelta | None) -> float | None:
    """``start_in`` as seconds from now."""
    if start_in is None:
        return None
    seconds = start_in.total_seconds() if isinstance(start_in, dt.timedelta) else start_in
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds >= 0:
        raise ConfigurationError(f"start_in must be seconds >= 0 or a timedelta, got {start_in!r}")
    return float(seconds)


def _check_run_options(
    idempotency_key: str | None, tags: list[str] | tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The run's tags without repeats (None: the deployment's); ConfigurationError for a bad
    key or tags."""
    from vivace.deployments.deploy import check_tags

    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not idempotency_key.strip()
    ):
        raise ConfigurationError(f"idempotency_key must be non-empty text, got {idempotency_key!r}")
    if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise ConfigurationError(
            f"idempotency_key {idempotency_key[:40]!r}... is {len(idempotency_key)} characters; "
            f"expected at most {MAX_IDEMPOTENCY_KEY}"
        )
    return None if tags is None else check_tags(tags, "tags", ConfigurationError)
