"""Task arguments: find the futures and states inside them, wait for them, swap in their values.

Arguments are walked once, cheaply: only built-in containers (list, tuple, set, frozenset, dict)
are looked into, and a structure is rebuilt only when it holds a future or a state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vivace.engine.futures import VivaceFuture
from vivace.engine.states import UPSTREAM_FAILED, Failed, State, StateType
from vivace.exceptions import UpstreamTaskError

Upstream = VivaceFuture | State

WAIT_FOR_KEY = "__wait_for__"


def _holds_upstream(value: Any) -> bool:
    if isinstance(value, (VivaceFuture, State)):
        return True
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return any(map(_holds_upstream, value))
    if kind is dict:
        return any(map(_holds_upstream, value.values()))
    return False


def _collect(value: Any, found: list[Upstream]) -> None:
    if isinstance(value, (VivaceFuture, State)):
        found.append(value)
        return
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        for item in value:
            _collect(item, found)
    elif kind is dict:
        for item in value.values():
            _collect(item, found)


def find_upstreams(
    parameter_names: Sequence[str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[Any] | None,
) -> dict[str, list[Upstream]] | None:
    """Futures and states in the arguments, keyed by parameter name; None when there are none."""
    found: dict[str, list[Upstream]] | None = None
    for position, value in enumerate(args):
        if _holds_upstream(value):
            name = parameter_names[position] if position < len(parameter_names) else "args"
            if found is None:
                found = {}
            _collect(value, found.setdefault(name, []))
    for name, value in kwargs.items():
        if _holds_upstream(value):
            if found is None:
                found = {}
            _collect(value, found.setdefault(name, []))
    if wait_for:
        upstreams: list[Upstream] = []
        for value in wait_for:
            _collect(value, upstreams)
        if upstreams:
            if found is None:
                found = {}
            found[WAIT_FOR_KEY] = upstreams
    return found


def task_inputs_record(upstreams: dict[str, list[Upstream]]) -> dict[str, list[str]]:
    """The JSON the store keeps: upstream task run ids per parameter (the dependency graph)."""
    record: dict[str, list[str]] = {}
    for name, items in upstreams.items():
        ids = [str(run_id) for run_id in map(_run_id, items) if run_id is not None]
        if ids:
            record[name] = ids
    return record


def _run_id(upstream: Upstream) -> Any:
    return upstream.task_run_id if isinstance(upstream, VivaceFuture) else upstream.run_id


def upstream_failure(upstreams: dict[str, list[Upstream]]) -> State | None:
    """Wait for every upstream; if one did not complete, the Failed state for the downstream."""
    for items in upstreams.values():
        for upstream in items:
            state = upstream.wait() if isinstance(upstream, VivaceFuture) else upstream
            if state.type is not StateType.COMPLETED:
                name = (
                    upstream.task_run.name
                    if isinstance(upstream, VivaceFuture)
                    else f"run {state.run_id}"
                )
                run_id = _run_id(upstream)
                message = f"upstream task run {name!r} ({run_id}) ended {state.name}" + (
                    f": {state.message}" if state.message else ""
                )
                return Failed(UpstreamTaskError(message), name=UPSTREAM_FAILED, message=message)
    return None


async def await_upstreams(upstreams: dict[str, list[Upstream]] | None) -> None:
    """Wait for the upstream futures without blocking the event loop (async runs only)."""
    if upstreams:
        for items in upstreams.values():
            for upstream in items:
                if isinstance(upstream, VivaceFuture) and not upstream.done():
                    await upstream.wait_async()


def resolve(value: Any) -> Any:
    """``value`` with every future and state inside it replaced by its result."""
    if isinstance(value, VivaceFuture):
        return value.state.result()
    if isinstance(value, State):
        return value.result()
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        if not any(map(_holds_upstream, value)):
            return value
        return kind(map(resolve, value))
    if kind is dict:
        if not any(map(_holds_upstream, value.values())):
            return value
        return {key: resolve(item) for key, item in value.items()}
    return value


def resolve_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return tuple(map(resolve, args)), {name: resolve(value) for name, value in kwargs.items()}
