"""Holding concurrency slots in a process: waiting for them, keeping them alive, giving them back.

:func:`acquire_slots` (and :func:`acquire_slots_async`) tries :func:`~vivace.store.concurrency.
acquire`; when a limit is full it waits, and tries again when a slot may have freed:

- a release in this process wakes its waiters at once (a condition, and an ``asyncio.Event`` per
  async waiter, set through its loop);
- on PostgreSQL, one thread per process and database LISTENs on its own connection for the
  ``NOTIFY`` that every release sends, and wakes the waiters of the limits named;
- SQLite has no notifications: waiters in other processes poll, from 20 ms growing to at most
  0.5 s, reading the limits' use (no write lock) before they try;
- a dead holder's lease is never announced: it is noticed when its expiry passes, and a waiter
  never sleeps past the first expiry of the leases that block it.

Nothing sleeps a fixed long time; a waiter pays one short read per wake-up, and on PostgreSQL
wakes only for a release of a limit it waits for (or every :data:`LISTEN_RECHECK` seconds).

Every lease a process holds is renewed by ONE daemon thread (:class:`_LeaseKeeper`) every third
of ``VIVACE_CONCURRENCY_LEASE_SECONDS``: when the process dies, its leases stop being renewed and
run out, and their slots come back to the others.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

from vivace.exceptions import ConcurrencySlotTimeoutError
from vivace.settings import get_settings
from vivace.store import concurrency as store
from vivace.store.concurrency import Blocked

logger = logging.getLogger("vivace.concurrency")

POLL_FIRST = 0.02
"""Seconds a polling waiter (SQLite) first waits; each wait is 1.5 times the last..."""
POLL_MAX = 0.5
"""...up to this."""
LISTEN_RECHECK = 10.0
"""Seconds a waiter notified by PostgreSQL waits at most before it looks again all the same."""
_LISTEN_READY = 5.0  # seconds a first waiter waits for the listener's LISTEN to be in place
_EXPIRY_MARGIN = 0.01  # look again just after a blocking lease expired, not just before

OnWait = Callable[[Blocked], None]


def acquire_slots(
    url: str,
    names: Sequence[str],
    occupy: int,
    holder: str,
    *,
    timeout: float | None = None,
    missing: Literal["error", "skip"] = "error",
    on_wait: OnWait | None = None,
) -> list[uuid.UUID]:
    """Take ``occupy`` slots of every limit in ``names``, waiting as long as ``timeout``
    (None: as long as it takes); return the lease ids, kept alive until :func:`release_slots`.

    ``on_wait(blocked)`` is called once, when the first try finds a limit full. Raises
    ConcurrencySlotTimeoutError naming the full limit when the timeout passes.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    backoff = _Backoff()
    listening: bool | None = None  # found out at the first wait: a free slot costs no listener
    while True:
        since = _wakeups.mark(names)
        got = _try(url, names, occupy, holder, missing, look_first=listening is not None)
        if not isinstance(got, Blocked):
            _keeper.add(url, got)
            return got
        if listening is None:
            if on_wait is not None:
                on_wait(got)
            # Once listening, the listener wakes everyone: a release since ``since`` is not missed.
            listening = _listening(url)
        wait = _wait_seconds(got, listening, backoff, deadline, timeout)
        _wakeups.wait(names, since, wait)


async def acquire_slots_async(
    url: str,
    names: Sequence[str],
    occupy: int,
    holder: str,
    *,
    timeout: float | None = None,
    missing: Literal["error", "skip"] = "error",
    on_wait: OnWait | None = None,
) -> list[uuid.UUID]:
    """:func:`acquire_slots` for a coroutine: the event loop never blocks.

    Each try runs on a worker thread (a few milliseconds) and the waits are awaited. Cancelled
    while a try is under way, it gives back whatever that try took.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else time.monotonic() + timeout
    backoff = _Backoff()
    listening: bool | None = None
    while True:
        since = _wakeups.mark(names)
        attempt = functools.partial(
            _try, url, names, occupy, holder, missing, look_first=listening is not None
        )
        running = loop.run_in_executor(None, attempt)
        try:
            got = await asyncio.shield(running)
        except asyncio.CancelledError:
            running.add_done_callback(functools.partial(_give_back_if_taken, url))
            raise
        if not isinstance(got, Blocked):
            _keeper.add(url, got)
            return got
        if listening is None:
            if on_wait is not None:
                on_wait(got)
            listening = _listening_now(url)
            if listening is None:
                listening = await loop.run_in_executor(None, _listening, url)
        wait = _wait_seconds(got, listening, backoff, deadline, timeout)
        await _wakeups.wait_async(names, since, wait)


def release_slots(
    url: str, lease_ids: Collection[uuid.UUID], names: Collection[str] | None = None
) -> None:
    """Give the slots back and wake their waiters; they stop being renewed first, so if the
    database cannot be reached now they come back by themselves when the leases run out.

    ``names``: the limits the leases were taken of, when the caller knows them.
    """
    if not lease_ids:
        return
    _keeper.discard(url, lease_ids)
    _wakeups.notify(store.release(url, lease_ids, names))


def held_lease_count() -> int:
    """How many leases this process holds and renews (for tests and diagnostics)."""
    return _keeper.count()


# -- trying and waiting --------------------------------------------------------------------------


def _try(
    url: str,
    names: Sequence[str],
    occupy: int,
    holder: str,
    missing: Literal["error", "skip"],
    *,
    look_first: bool,
) -> list[uuid.UUID] | Blocked:
    """One try; a waiter trying again reads first, and takes the write lock only if it can fit."""
    if look_first:
        blocked = store.has_room(url, names, occupy)
        if blocked is not None:
            return blocked
    lease_seconds = get_settings().concurrency_lease_seconds
    return store.acquire(url, names, occupy, holder, lease_seconds, missing=missing)


def _give_back_if_taken(url: str, done: asyncio.Future[Any]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    got = done.result()
    if not isinstance(got, Blocked) and got:
        try:
            release_slots(url, got)
        except Exception as error:  # the leases run out by themselves: not renewed
            logger.warning("could not give back concurrency slots of a cancelled wait: %s", error)


class _Backoff:
    """The waits of a polling waiter: POLL_FIRST, then 1.5 times longer each time, to POLL_MAX."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = POLL_FIRST

    def next(self) -> float:
        seconds = self.seconds
        self.seconds = min(seconds * 1.5, POLL_MAX)
        return seconds


def _wait_seconds(
    blocked: Blocked,
    listening: bool,
    backoff: _Backoff,
    deadline: float | None,
    timeout: float | None,
) -> float:
    """How long to wait before the next try; raises the timeout error when none is left."""
    now = time.monotonic()
    if deadline is not None and now >= deadline:
        raise ConcurrencySlotTimeoutError(
            f"no slot of concurrency limit {blocked.name!r} freed within {timeout:g} seconds "
            f"({blocked.in_use} of its {blocked.limit} slots in use); wait longer, or see who "
            f"holds them with `vivace concurrency-limit inspect {blocked.name}`"
        )
    wait = LISTEN_RECHECK if listening else backoff.next()
    wait = min(wait, max(0.0, blocked.retry_at - time.time()) + _EXPIRY_MARGIN)
    if deadline is not None:
        wait = min(wait, deadline - now)
    return wait


class _Wakeups:
    """Wakes the waiters of a limit when one of its slots may have freed.

    A waiter takes a :meth:`mark` before it tries, then waits until the mark changes: a release
    that lands between its try and its wait is not missed.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._everyone = 0  # bumped when every waiter must look again
        self._per_name: dict[str, int] = {}
        self._async: set[tuple[asyncio.AbstractEventLoop, asyncio.Event, frozenset[str]]] = set()

    def mark(self, names: Sequence[str]) -> tuple[int, ...]:
        per_name = self._per_name
        return (self._everyone, *(per_name.get(name, 0) for name in names))

    def notify(self, names: Collection[str] | None) -> None:
        """A slot of these limits may be free (None: of any limit)."""
        with self._changed:
            if names is None:
                self._everyone += 1
            else:
                for name in names:
                    self._per_name[name] = self._per_name.get(name, 0) + 1
            self._changed.notify_all()
            woken = [
                (loop, event)
                for loop, event, waits_for in self._async
                if names is None or not waits_for.isdisjoint(names)
            ]
        for loop, event in woken:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def wait(self, names: Sequence[str], since: tuple[int, ...], timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.mark(names) != since, timeout)

    async def wait_async(
        self, names: Sequence[str], since: tuple[int, ...], timeout: float
    ) -> None:
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event, frozenset(names))
        with self._changed:
            if self.mark(names) != since:
                return
            self._async.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            with self._changed:
                self._async.discard(waiter)


_wakeups = _Wakeups()


# -- PostgreSQL notifications ------------------------------------------------------------------


class _Listener:
    """LISTENs for released slots on a dedicated connection, in a daemon thread.

    Reconnects after a failure (with backoff); after each (re)connect it wakes every waiter,
    since notifications sent while it was not listening are lost.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.ready = threading.Event()  # set once the first connection succeeded or failed
        self.live = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="vivace-concurrency-listener", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 0.2
            except Exception as error:
                logger.debug("concurrency listener: %s; reconnecting in %.1f s", error, delay)
            finally:
                self.live = False
                self.ready.set()
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)

    def _listen(self) -> None:
        import psycopg

        from vivace.store.database import get_engine

        engine = get_engine(self.url)
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)
        params.setdefault("connect_timeout", 10)
        params.setdefault("application_name", "vivace-concurrency")
        with psycopg.connect(autocommit=True, **params) as conn:
            conn.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
            self.live = True
            self.ready.set()
            _wakeups.notify(None)
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):
                    _wakeups.notify(note.payload.split("\n") if note.payload else None)


_listeners: dict[str, _Listener] = {}
_listeners_lock = threading.Lock()


def _listening_now(url: str) -> bool | None:
    """Whether notifications reach this process's waiters now; None if that means waiting."""
    if not url.startswith("postgresql"):
        return False
    listener = _listeners.get(url)
    if listener is None or not listener.ready.is_set():
        return None
    return listener.live


def _listening(url: str) -> bool:
    """Start listening to ``url``'s notifications (PostgreSQL) if not yet; whether it does."""
    if not url.startswith("postgresql"):
        return False
    with _listeners_lock:
        listener = _listeners.get(url)
        if listener is None:
            listener = _listeners[url] = _Listener(url)
    listener.ready.wait(_LISTEN_READY)
    return listener.live


def stop_listeners() -> None:
    """Stop the listener threads and close their connections (tests; a process that ends)."""
    with _listeners_lock:
        listeners = list(_listeners.values())
        _listeners.clear()
    for listener in listeners:
        listener.stop()


# -- renewals ------------------------------------------------------------------------------------


class _LeaseKeeper:
    """The one thread per process that renews every lease it holds.

    It runs while the process holds leases and stops when it holds none; a lease it finds gone
    (it expired while the process stalled, or its limit was reset) is dropped with a warning.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, set[uuid.UUID]] = {}
        self._thread: threading.Thread | None = None
        self._exit_registered = False

    def add(self, url: str, lease_ids: Collection[uuid.UUID]) -> None:
        if not lease_ids:
            return
        with self._lock:
            self._leases.setdefault(url, set()).update(lease_ids)
            if not self._exit_registered:
                atexit.register(self.release_all)
                self._exit_registered = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="vivace-concurrency-leases", daemon=True
                )
                self._thread.start()

    def discard(self, url: str, lease_ids: Collection[uuid.UUID]) -> None:
        with self._lock:
            held = self._leases.get(url)
            if held is not None:
                held.difference_update(lease_ids)
                if not held:
                    del self._leases[url]

    def release_all(self) -> None:
        """Give back what the process still holds as it exits normally (a killed one cannot:
        its leases run out instead)."""
        with self._lock:
            held, self._leases = self._leases, {}
        for url, ids in held.items():
            try:
                store.release(url, ids)
            except Exception as error:
                logger.debug("could not give back concurrency leases at exit: %s", error)

    def count(self) -> int:
        with self._lock:
            return sum(len(ids) for ids in self._leases.values())

    def forget_all(self) -> None:
        """In a forked child: the parent holds the leases, the child holds none."""
        self._lock = threading.Lock()
        self._leases = {}
        self._thread = None

    def _run(self) -> None:
        while True:
            lease_seconds = get_settings().concurrency_lease_seconds
            time.sleep(lease_seconds / 3)
            with self._lock:
                if not self._leases:
                    self._thread = None
                    return
                held = {url: set(ids) for url, ids in self._leases.items()}
            for url, ids in held.items():
                self._renew(url, ids, lease_seconds)

    def _renew(self, url: str, ids: set[uuid.UUID], lease_seconds: float) -> None:
        try:
            found = store.renew(url, ids, lease_seconds)
        except Exception as error:
            logger.warning(
                "could not renew %d concurrency lease(s): %s; their slots free themselves if "
                "this lasts %g seconds",
                len(ids),
                error,
                lease_seconds,
            )
            return
        with self._lock:
            lost = (ids - found) & self._leases.get(url, set())
        if lost:
            self.discard(url, lost)
            logger.warning(
                "%d concurrency lease(s) of this process ran out or were reset before they "
                "were renewed (the process stalled longer than VIVACE_CONCURRENCY_LEASE_SECONDS,"
                " or `vivace concurrency-limit reset` dropped them): their slots may be taken "
                "by others while this process still runs",
                len(lost),
            )


_keeper = _LeaseKeeper()


def _after_fork_in_child() -> None:
    global _listeners_lock, _wakeups
    _keeper.forget_all()
    _listeners.clear()
    _listeners_lock = threading.Lock()
    _wakeups = _Wakeups()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
