"""What the Dask and Ray runners share: dispatch, in-flight slots, cancellation, held results.

Both runners ship each task run (or batch of runs, ``task.map(batch_size=K)``) to a cluster as one
cluster task, through the runner-independent machinery of :mod:`vivace.engine.remote` and
:mod:`vivace.engine.remote_driver`. :class:`ClusterTaskRunner` holds the logic that does not
depend on the engine:

- **submitting**: a :class:`~vivace.engine.remote_driver.RemoteFuture` per run; a run is sent at
  once, or once the upstreams the cluster cannot wait for are done (another runner's futures, ours
  not sent yet); a run sent again waits for every upstream.
- **backpressure**: at most ``max_in_flight`` cluster tasks submitted and unfinished; a sender
  waits for a slot, except on the thread that settles finished tasks (which frees the slots), whose
  sends go to a backlog sent as slots free up.
- **cleanup**: ``stop()`` waits for what is outstanding (or not), cancels the rest and records it
  CANCELLED, fetches the results the caller's futures still hold, and releases the cluster's copies.
- **a dead worker**: the run ends CRASHED, or is sent again if it has retries left.

A subclass says how to send (``_send``), cancel (``_cancel_native``) and fetch (``_gather``) on its
engine, how it learns that a cluster task finished, and which thread settles finished tasks.
"""

from __future__ import annotations

import abc
import collections
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from vivace.engine.futures import VivaceFuture
from vivace.engine.remote import Handover, RemoteFailure, RemoteSetup, flow_info
from vivace.engine.remote_driver import (
    RemoteCompleted,
    RemoteFuture,
    RemoteValue,
    cancel_on_driver,
    completed_outcomes,
    fail_on_driver,
    record_deferred_pending,
    unsent_error,
    worker_died,
)
from vivace.engine.states import StateType, describe_exception
from vivace.exceptions import ConfigurationError, VivaceError
from vivace.runners.base import TaskRunner, WhenAllDone, track_pending

if TYPE_CHECKING:
    from vivace.engine.task_engine import TaskCall


class Flight:
    """One cluster task in flight: its runs, their futures, and ``ref``, the native future that
    holds its result (a ``distributed.Future``, a Ray ``ObjectRef``), handed to downstream runs."""

    __slots__ = ("calls", "futures", "ref")

    def __init__(self, ref: Any, calls: list[TaskCall], futures: list[RemoteFuture]) -> None:
        self.ref = ref
        self.calls = calls
        self.futures = futures


F = TypeVar("F", bound=Flight)


class ClusterTaskRunner(TaskRunner, Generic[F]):
    """The engine-independent part of a runner that ships task runs to a cluster."""

    _engine: ClassVar[str]  # "Dask", "Ray": for messages
    _logger: ClassVar[logging.Logger]
    _future_type: ClassVar[type[RemoteFuture]] = RemoteFuture  # what submit() returns

    def __init__(self, max_in_flight: int) -> None:
        if (
            not isinstance(max_in_flight, int)
            or isinstance(max_in_flight, bool)
            or max_in_flight < 1
        ):
            raise ConfigurationError(
                f"{self._engine}TaskRunner: max_in_flight must be a whole number of 1 or more, "
                f"got {max_in_flight!r}"
            )
        self.max_in_flight = max_in_flight
        self._setup: RemoteSetup | None = None
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._room_waiters = 0  # threads in _wait_on_room: a landing notifies only then
        self._in_flight: dict[Any, F] = {}
        self._taken = 0  # in-flight slots taken (a slot is taken just before the task is sent)
        self._backlog: collections.deque[tuple[list[TaskCall], list[RemoteFuture]]] = (
            collections.deque()
        )
        self._values: weakref.WeakSet[RemoteValue] = weakref.WeakSet()

    @property
    def in_flight(self) -> int:
        """Cluster tasks submitted and not finished yet (at most ``max_in_flight``)."""
        return self._taken

    # -- what the engine does ----------------------------------------------------------------------

    def _check_started(self) -> None:
        """Raise if ``submit()`` cannot take runs now (by default it always can)."""

    @abc.abstractmethod
    def _send(self, calls: list[TaskCall], futures: list[RemoteFuture]) -> None:
        """Send one cluster task for ``calls`` (one run, or a batch) and track it in flight."""

    @abc.abstractmethod
    def _stopping(self) -> bool:
        """Whether stop() has begun: a sender waiting for a slot stops waiting then."""

    @abc.abstractmethod
    def _on_settling_thread(self) -> bool:
        """Whether this thread settles finished cluster tasks (and so frees the slots)."""

    def _stop_sending(self) -> None:
        """Called with the lock held as stop() cancels what is outstanding (default: nothing)."""

    @abc.abstractmethod
    def _cancel_native(self, flights: list[F]) -> None:
        """Cancel these cluster tasks on the engine (a warning, not an error, if it cannot)."""

    @abc.abstractmethod
    def _gather(self, refs: list[Any]) -> list[Any]:
        """The values the native futures ``refs`` hold, fetched to the driver."""

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, call: TaskCall) -> VivaceFuture:
        self._check_started()
        future = self._future_type(call.run, self)
        track_pending(call, future)
        self._dispatch([call], [future])
        return future

    def submit_batch(self, calls: list[TaskCall]) -> list[VivaceFuture]:
        self._check_started()
        futures = [self._future_type(call.run, self, item) for item, call in enumerate(calls)]
        for call, future in zip(calls, futures, strict=True):
            track_pending(call, future)
        self._dispatch(calls, futures)
        return list(futures)

    def _dispatch(
        self, calls: list[TaskCall], futures: list[RemoteFuture], settled_only: bool = False
    ) -> None:
        """Send now, or once the upstreams the cluster cannot wait for are done.

        The cluster waits for upstreams that are this runner's cluster tasks; any other unfinished
        upstream (another runner's future, one of ours not sent yet) is waited for here. With
        ``settled_only``, every upstream must be done first (a run sent again).
        """
        waiting: dict[int, VivaceFuture] = {}
        for call in calls:
            if call.upstreams is None:
                continue
            for items in call.upstreams.values():
                for item in items:
                    if (
                        isinstance(item, VivaceFuture)
                        and not item.done()
                        and (settled_only or not self._in_the_cluster(item))
                    ):
                        waiting[id(item)] = item
        if waiting:
            for call in calls:  # it waits here: PENDING shows now
                record_deferred_pending(call)
            WhenAllDone(waiting.values(), lambda: self._send(calls, futures))
        else:
            self._send(calls, futures)

    def _in_the_cluster(self, future: VivaceFuture) -> bool:
        return (
            isinstance(future, RemoteFuture)
            and future.owner is self
            and isinstance(future.handle, Flight)
        )

    def _native(self, future: VivaceFuture) -> tuple[Any, int | None] | None:
        """The native future holding ``future``'s result, for a downstream run (Handover)."""
        if not isinstance(future, RemoteFuture) or future.owner is not self:
            return None
        handle = future.handle
        if isinstance(handle, Flight):
            return handle.ref, future.item
        if isinstance(handle, RemoteValue) and handle.ref is not None:
            return handle.ref, future.item
        return None

    def _prepare(
        self, setup: RemoteSetup, calls: list[TaskCall], futures: list[RemoteFuture]
    ) -> tuple[Handover, list[Any]] | None:
        """The calls as they travel to the worker; None (the runs FAILED) if they cannot."""
        try:
            spec = setup.spec_for(calls[0].task)
            handover = Handover(self._native)
            flow = flow_info(calls[0])
            remote_calls = [handover.call(call, spec, flow) for call in calls]
        except Exception as error:
            for call, future in zip(calls, futures, strict=True):
                future.set_final_state(fail_on_driver(call, error))
            return None
        return handover, remote_calls

    def _slot_or_backlog(self, calls: list[TaskCall], futures: list[RemoteFuture]) -> bool:
        """Take an in-flight slot for ``calls``; False if they went to the backlog instead."""
        if self._take_slot():
            return True
        for call in calls:  # it waits here: PENDING shows now
            record_deferred_pending(call)
        with self._lock:
            self._backlog.append((calls, futures))
        return False

    def _unsent(
        self, calls: list[TaskCall], futures: list[RemoteFuture], problem: BaseException
    ) -> None:
        """The engine refused the cluster task: give its slot back, the runs end FAILED."""
        self._give_slot()
        for call, future in zip(calls, futures, strict=True):
            future.set_final_state(fail_on_driver(call, unsent_error(call, problem)))

    def _cancel_unsent(self, calls: list[TaskCall], futures: list[RemoteFuture]) -> None:
        for call, future in zip(calls, futures, strict=True):
            future.handle = None
            future.set_final_state(cancel_on_driver(call, "the flow run ended first"))

    # -- in-flight slots -------------------------------------------------------------------------

    def _take_slot(self) -> bool:
        """Take an in-flight slot, waiting for one; False on the settling thread when full."""
        with self._room:
            while self._taken >= self.max_in_flight and not self._stopping():
                if self._on_settling_thread():
                    return False  # never block the thread that frees the slots
                self._wait_for_room()
            self._taken += 1
            return True

    def _wait_for_room(self) -> None:
        """Called with the lock held while every slot is taken: wait until one may be free."""
        self._wait_on_room()

    def _wait_on_room(self, timeout: float | None = None) -> None:
        """Wait on ``_room`` (its lock held), counted: a run landing, once per run, notifies only
        when someone waits (a notification costs the result path a few µs)."""
        self._room_waiters += 1
        try:
            self._room.wait(timeout)
        finally:
            self._room_waiters -= 1

    def _give_slot(self) -> None:
        with self._room:
            self._taken -= 1
            self._room.notify_all()

    def _landed(self, key: Any) -> F | None:
        """Take a finished cluster task out of flight, freeing its slot (None: stop() took it)."""
        with self._room:
            flight = self._in_flight.pop(key, None)
            if flight is not None:
                self._taken -= 1
                if self._room_waiters:
                    self._room.notify_all()
        return flight

    def _send_backlog(self) -> None:
        while True:
            with self._lock:
                if not self._backlog or self._taken >= self.max_in_flight:
                    return
                calls, futures = self._backlog.popleft()
            self._send(calls, futures)

    # -- settling --------------------------------------------------------------------------------

    @staticmethod
    def _settle_completed(futures: list[RemoteFuture], value: RemoteValue) -> None:
        """Every run of a cluster task completed: each future takes its part of ``value``."""
        for future in futures:
            future.handle = value
            future.set_final_state(RemoteCompleted(value, future.item, future.task_run.id))

    @staticmethod
    def _settle_partial(flight: Flight, outcome: Any, value: RemoteValue) -> None:
        """Some run of a cluster task did not complete; ``outcome`` (a RemoteFailure, or a
        batch's outcomes) says which and why, and becomes ``value``'s result."""
        outcomes = [outcome] if type(outcome) is RemoteFailure else list(outcome)
        states = completed_outcomes(outcomes, [call.run.id for call in flight.calls])
        value.set(outcome)
        for future, state in zip(flight.futures, states, strict=True):
            future.handle = value if state.type is StateType.COMPLETED else None
            future.set_final_state(state)

    def _settling_failed(self, flight: Flight, error: BaseException, what: str) -> None:
        """Settling a finished cluster task raised: its runs not settled yet end FAILED."""
        self._logger.exception("vivace could not settle %s", what)
        for call, future in zip(flight.calls, flight.futures, strict=True):
            if not future.done():
                future.set_final_state(fail_on_driver(call, error))

    # -- a dead worker ---------------------------------------------------------------------------

    def _worker_died(self, call: TaskCall, future: RemoteFuture, reason: str) -> None:
        future.handle = None
        delay = worker_died(call, f"its {self._engine} worker died ({reason})")
        if delay is None:
            future.set_final_state(call.run.state)
            return
        future.item = None  # sent again as a run of its own

        def again() -> None:
            self._dispatch([call], [future], settled_only=True)

        if delay > 0:
            timer = threading.Timer(delay, again)
            timer.daemon = True
            timer.start()
        else:
            again()

    # -- stopping --------------------------------------------------------------------------------

    def _wind_down(self, wait: bool, reason: str) -> None:
        """stop()'s shared part: wait (or not), cancel the rest, keep held results, let go."""
        if wait:
            with self._room:
                while self._in_flight or self._backlog:
                    self._wait_on_room()
        self._cancel_outstanding(reason)
        if wait:
            self._fetch_held_results()
        for value in list(self._values):
            value.ref = None  # releases the cluster's copy
        self._values = weakref.WeakSet()

    def _cancel_outstanding(self, reason: str) -> None:
        with self._room:
            self._stop_sending()
            flights = list(self._in_flight.values())
            self._in_flight.clear()
            self._taken -= len(flights)
            backlog = list(self._backlog)
            self._backlog.clear()
            self._room.notify_all()
        if flights:
            self._cancel_native(flights)
        for calls, futures in [(f.calls, f.futures) for f in flights] + backlog:
            for call, future in zip(calls, futures, strict=True):
                if not future.done():
                    future.handle = None
                    future.set_final_state(cancel_on_driver(call, reason))

    def _released_error(self) -> VivaceError:
        """What ``future.result()`` raises for a result the ended flow run let go of."""
        return VivaceError(
            f"the result of this task run stayed on the {self._engine} cluster, which its flow run "
            "has released; fetch results with future.result() inside the flow"
        )

    def _fetch_error(self, error: Exception) -> VivaceError:
        return VivaceError(
            f"could not fetch the result from the {self._engine} cluster: "
            f"{describe_exception(error)}"
        )

    def _fetch_held_results(self) -> None:
        """Results the caller's futures still hold come to the driver before the cluster goes."""
        values = [v for v in list(self._values) if v.ref is not None and not v.fetched()]
        if not values:
            return
        try:
            results = self._gather([v.ref for v in values])
        except Exception as error:
            self._logger.warning(
                "could not fetch %d results held by futures of the ended flow run: %s",
                len(values),
                describe_exception(error),
            )
            return
        for value, result in zip(values, results, strict=True):
            value.set(result)
