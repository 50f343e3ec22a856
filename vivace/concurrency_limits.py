"""Concurrency limits: ``vivace.concurrency(name)`` around a block, and task tag limits.

A limit is created once, outside the code (``vivace concurrency-limit create --global warehouse
2``), and then holds across every process using the same database: threads, flows, Dask and Ray
workers, deployments. Example::

    with vivace.concurrency("warehouse"):          # one slot; waits while both are taken
        load_into_the_warehouse()

    async with vivace.concurrency(["warehouse", "api"], occupy=2, timeout=60):
        ...                                         # two slots of each, all or nothing

- Several names are taken together, in one transaction, or not at all: two holders asking for
  the same limits in any order never deadlock.
- ``timeout`` (seconds; None waits as long as it takes) raises ConcurrencySlotTimeoutError
  naming the full limit. Asking for more slots than a limit has raises ConcurrencyLimitError at
  once, rather than waiting forever.
- A name no limit has raises ConcurrencyLimitNotFoundError, which says how to create it: a typo
  must not silently run unlimited. An inactive limit (``vivace concurrency-limit update NAME
  --inactive``) is not enforced: the block runs at once, taking no slot.
- The slots are a lease that this process renews (one thread per process): if it dies, they
  come back after ``VIVACE_CONCURRENCY_LEASE_SECONDS`` (30).

Task tag limits: ``vivace concurrency-limit create TAG N`` makes at most N task runs tagged TAG
run at once. A tagged run takes one slot of each of its tags' limits before it enters RUNNING
(staying PENDING meanwhile, with one log line saying what it waits for), gives them back when it
ends, and between the attempts of a retry. Which tags have a limit is read at most every
:data:`TAG_LIMITS_REFRESH` seconds per process: a tag limit created while a flow runs is
honoured from then on. Tasks without tags never look.

The database comes from the settings (``VIVACE_DATABASE_URL``), which travel to Dask and Ray
workers with the flow; limits need the database itself, not only a server's API.

(This module is ``concurrency_limits``, not ``concurrency``: a module of that name would be
shadowed by the function ``vivace.concurrency``, and ``import vivace.concurrency`` would not
give the module.)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from vivace.exceptions import ConfigurationError

if TYPE_CHECKING:
    from vivace.engine.runs import TaskRun
    from vivace.store.concurrency import Blocked

logger = logging.getLogger("vivace.concurrency")

TAG_LIMITS_REFRESH = 5.0
"""Seconds a process trusts what it read of which task tags have a limit."""


def concurrency(
    names: str | Sequence[str], occupy: int = 1, timeout: float | None = None
) -> ConcurrencySlots:
    """Hold ``occupy`` slots of each named limit for the ``with`` (or ``async with``) block.

    See the module docstring; each call gives a new object, for one block.
    """
    return ConcurrencySlots(names, occupy, timeout)


class ConcurrencySlots:
    """The slots of one ``with vivace.concurrency(...)`` block: taken on entry, given back on
    exit (also when the block raises)."""

    def __init__(
        self, names: str | Sequence[str], occupy: int = 1, timeout: float | None = None
    ) -> None:
        self.names = _check_names(names)
        if isinstance(occupy, bool) or not isinstance(occupy, int) or occupy < 1:
            raise ConfigurationError(
                f"vivace.concurrency(): occupy must be a whole number of slots >= 1, got {occupy!r}"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ConfigurationError(
                f"vivace.concurrency(): timeout must be seconds >= 0 or None, got {timeout!r}"
            )
        self.occupy = occupy
        self.timeout = timeout
        self._url: str | None = None
        self._leases: list[uuid.UUID] | None = None

    def __enter__(self) -> ConcurrencySlots:
        url = self._start()
        self._leases = _acquire_lending_thread(
            url, self.names, self.occupy, _holder(), self.timeout, "error", self._waiting
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._give_back()

    async def __aenter__(self) -> ConcurrencySlots:
        from vivace.store.concurrency_slots import acquire_slots_async

        url = self._start()
        self._leases = await acquire_slots_async(
            url, self.names, self.occupy, _holder(), timeout=self.timeout, on_wait=self._waiting
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        import asyncio

        await asyncio.to_thread(self._give_back)

    @property
    def lease_ids(self) -> list[uuid.UUID]:
        """The leases held inside the block (none for inactive limits)."""
        return list(self._leases or ())

    def _start(self) -> str:
        from vivace.settings import get_settings

        if self._leases is not None:
            raise ConfigurationError(
                f"vivace.concurrency({self.names!r}) is already held: call vivace.concurrency() "
                "once per with block"
            )
        self._url = get_settings().resolved_database_url
        return self._url

    def _waiting(self, blocked: Blocked) -> None:
        logger.debug(
            "waiting for %d slot(s) of concurrency limit %r (%d of %d in use)",
            self.occupy,
            blocked.name,
            blocked.in_use,
            blocked.limit,
        )

    def _give_back(self) -> None:
        leases, self._leases = self._leases, None
        if leases and self._url is not None:
            _release_or_warn(self._url, leases, self.names)

    def __repr__(self) -> str:
        return f"concurrency({self.names!r}, occupy={self.occupy}, timeout={self.timeout!r})"


# -- task tag limits (for the task engine) --------------------------------------------------------

_tag_limits: dict[str, tuple[float, frozenset[str]]] = {}
# The slots this process's task runs hold: run id -> (database URL, lease ids, limit names).
_task_leases: dict[uuid.UUID, tuple[str, list[uuid.UUID], list[str]]] = {}


def limited_tags(url: str, tags: Sequence[str]) -> list[str] | None:
    """The limit names of ``tags`` that have an active limit, or None when the process's list
    of limited tags is stale and must be read first (:func:`refresh_tag_limits`)."""
    entry = _tag_limits.get(url)
    if entry is None or time.monotonic() - entry[0] > TAG_LIMITS_REFRESH:
        return None
    return _limit_names(entry[1], tags)


def refresh_tag_limits(url: str, tags: Sequence[str]) -> list[str]:
    """Read which task tags have an active limit (one short query); the limit names of
    ``tags`` among them.

    If the database cannot be reached, the process goes on with what it knew (nothing, at
    first) until the next refresh, with a warning: tagged runs then run as they would without
    limits, rather than fail while the batched writer rides out the outage.
    """
    from vivace.exceptions import StoreUnavailableError
    from vivace.store.concurrency import active_tag_limits

    try:
        limited = active_tag_limits(url)
    except StoreUnavailableError as error:
        known = _tag_limits.get(url)
        limited = known[1] if known is not None else frozenset()
        logger.warning(
            "cannot read which task tags have concurrency limits (%s); going on with %s for "
            "%g seconds",
            error,
            f"the {len(limited)} known" if limited else "none",
            TAG_LIMITS_REFRESH,
        )
    _tag_limits[url] = (time.monotonic(), limited)
    return _limit_names(limited, tags)


def _limit_names(limited: frozenset[str], tags: Sequence[str]) -> list[str]:
    if not limited:
        return []
    from vivace.store.concurrency import tag_limit_name

    return sorted({tag_limit_name(tag) for tag in tags if tag in limited})


def forget_tag_limits() -> None:
    """Forget what was read of which tags have limits: the next tagged run reads it again."""
    _tag_limits.clear()


def take_task_slots(url: str, run: TaskRun, log: Callable[[str], None]) -> None:
    """Wait for one slot of each limit of the run's tags (the run stays as it is meanwhile)."""
    assert run.tags is not None
    names = limited_tags(url, run.tags)
    if names is None:
        names = refresh_tag_limits(url, run.tags)
    if names:
        leases = _acquire_lending_thread(
            url, names, 1, _holder(run.id), None, "skip", _announcer(log)
        )
        _task_leases[run.id] = (url, leases, names)


async def take_task_slots_async(url: str, run: TaskRun, log: Callable[[str], None]) -> None:
    """:func:`take_task_slots` on the event loop, which never blocks."""
    import asyncio

    from vivace.store.concurrency_slots import acquire_slots_async

    assert run.tags is not None
    names = limited_tags(url, run.tags)
    if names is None:
        names = await asyncio.to_thread(refresh_tag_limits, url, run.tags)
    if names:
        leases = await acquire_slots_async(
            url, names, 1, _holder(run.id), missing="skip", on_wait=_announcer(log)
        )
        _task_leases[run.id] = (url, leases, names)


def give_back_task_slots(run: TaskRun) -> None:
    """Give back the slots the run holds, if any (its attempt ended)."""
    held = _task_leases.pop(run.id, None)
    if held is not None and held[1]:
        _release_or_warn(*held)


def _announcer(log: Callable[[str], None]) -> Callable[[Blocked], None]:
    def announce(blocked: Blocked) -> None:
        log(
            f"waiting for a slot of concurrency limit {blocked.name!r} "
            f"({blocked.in_use} of {blocked.limit} in use)"
        )

    return announce


# -- helpers -------------------------------------------------------------------------------------


def _acquire_lending_thread(
    url: str,
    names: Sequence[str],
    occupy: int,
    holder: str,
    timeout: float | None,
    missing: Literal["error", "skip"],
    on_wait: Callable[[Blocked], None],
) -> list[uuid.UUID]:
    """``acquire_slots``; a thread of ConcurrentTaskRunner's pool that has to wait lends the
    pool a thread meanwhile (as when it waits on a future), so that runs waiting for slots do
    not keep every other run off the pool. At most ``max_workers`` threads are lent so: the pool
    never grows past twice its size for runs that only wait."""
    from vivace.engine.futures import blocking_handler
    from vivace.store.concurrency_slots import acquire_slots

    pool: Any = getattr(blocking_handler, "pool", None)
    lent = False

    def waiting(blocked: Blocked) -> None:
        nonlocal lent
        on_wait(blocked)
        if pool is not None:
            with _lending:
                lent = _lent.get(id(pool), 0) < getattr(pool, "max_workers", 0)
                if lent:
                    _lent[id(pool)] = _lent.get(id(pool), 0) + 1
            if lent:
                pool.enter_blocking()

    try:
        return acquire_slots(
            url, names, occupy, holder, timeout=timeout, missing=missing, on_wait=waiting
        )
    finally:
        if lent:
            pool.exit_blocking()
            with _lending:
                left = _lent.pop(id(pool)) - 1
                if left:
                    _lent[id(pool)] = left


# Threads lent to each pool (by id) by runs waiting for slots: a pool lives while they wait.
_lent: dict[int, int] = {}
_lending = threading.Lock()


def _check_names(names: str | Sequence[str]) -> list[str]:
    listed = [names] if isinstance(names, str) else list(names)
    if not listed or not all(isinstance(name, str) and name for name in listed):
        raise ConfigurationError(
            f"vivace.concurrency(): expected a limit name or a non-empty list of names, got "
            f"{names!r}"
        )
    return listed


def _holder(task_run_id: uuid.UUID | None = None) -> str:
    """Who holds a lease: host and pid, and the task or flow run it is held for, if any."""
    where = f"{socket.gethostname()[:120]}:{os.getpid()}"
    if task_run_id is not None:
        return f"{where} task run {task_run_id}"
    from vivace.engine.context import current_context

    ctx = current_context()
    if ctx is not None and ctx.task_run is not None:
        return f"{where} task run {ctx.task_run.id}"
    if ctx is not None and ctx.flow is not None:
        return f"{where} flow run {ctx.flow.flow_run.id}"
    return where


def _release_or_warn(url: str, leases: list[uuid.UUID], names: list[str]) -> None:
    from vivace.settings import get_settings
    from vivace.store.concurrency_slots import release_slots

    try:
        release_slots(url, leases, names)
    except Exception as error:
        logger.warning(
            "could not give back %d concurrency slot lease(s): %s; they free themselves within "
            "%g seconds",
            len(leases),
            error,
            get_settings().concurrency_lease_seconds,
        )
