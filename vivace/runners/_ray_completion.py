"""How :class:`~vivace.runners.ray.RayTaskRunner` learns that its Ray tasks ended: on demand.

Having Ray report every task's end (``ObjectRef._on_completed``) costs the driver about as much
CPU as submitting the task. So a run's end is learned by whoever needs it:

- a caller of ``future.result()`` or ``wait()`` (and the flow run's end, which waits for every
  run) fetches that run's outcome itself, at once (:meth:`OnDemandCompletion._await`);
- a done-callback (``as_completed``, a downstream run of another runner) has Ray report that run's
  end (:meth:`OnDemandCompletion._watch`);
- a sender that finds every in-flight slot taken looks for Ray tasks that ended;
- everything else (``future.done()``, ``future.state``, a retry after a dead worker) is settled by
  a *settling thread* that looks over the runs in flight every ``HARVEST_EVERY`` seconds (one
  ``ray.wait`` over the oldest ones and a rotating slice of the rest, one ``ray.get`` for those
  that ended).

What a Ray task's outcome means for its runs (``_finished``) is the runner's business. Ray is
imported only inside the methods, which run once the runner has found it installed.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from vivace.engine.remote_driver import RemoteFuture
from vivace.engine.states import State, describe_exception
from vivace.runners.cluster import ClusterTaskRunner, Flight

if TYPE_CHECKING:
    from vivace.engine.futures import DoneCallback
    from vivace.engine.runs import TaskRun
    from vivace.engine.task_engine import TaskCall

logger = logging.getLogger("vivace.runners.ray")  # the Ray runner's one logger

HARVEST_EVERY = 0.05  # seconds between the settling thread's looks over the runs in flight
HARVEST_WINDOW = 256  # Ray tasks one look covers, at most


class RayFlight(Flight):
    """One Ray task in flight: its two returns (``outcome``, and ``ref``: the value)."""

    __slots__ = ("outcome", "timed_out", "watched")

    def __init__(
        self, outcome: Any, value: Any, calls: list[TaskCall], futures: list[RemoteFuture]
    ) -> None:
        super().__init__(value, calls, futures)
        self.outcome = outcome
        self.timed_out = False
        self.watched = False  # Ray reports its end (see OnDemandCompletion._watch)


class OnDemandCompletion(ClusterTaskRunner[RayFlight]):
    """The part of the Ray runner that learns when its Ray tasks end (see the module docs)."""

    _started: bool  # the runner's lifecycle: set by start(), cleared by stop()

    def __init__(self, max_in_flight: int) -> None:
        super().__init__(max_in_flight)
        self._settler: threading.Thread | None = None
        # Ray tasks whose end Ray reported (watched ones), for the settling thread; None: stop.
        self._ended: queue.SimpleQueue[tuple[RayFlight, Any] | None] = queue.SimpleQueue()
        self._rotation = 0  # where the rotating slice of the runs in flight starts

    @abc.abstractmethod
    def _finished(self, flight: RayFlight, result: Any) -> None:
        """Settle the runs of this ended Ray task from ``result`` (its outcome, or Ray's error)."""

    def _start_settling(self) -> None:
        self._settler = threading.Thread(
            target=self._settle_loop, name="vivace-ray-settle", daemon=True
        )
        self._settler.start()

    def _stop_settling(self) -> None:
        self._ended.put(None)
        if self._settler is not None and self._settler is not threading.current_thread():
            self._settler.join(timeout=30)
        self._settler = None

    def _on_settling_thread(self) -> bool:
        return threading.current_thread() is self._settler

    def _wait_for_room(self) -> None:
        """Every in-flight slot is taken: look for Ray tasks that ended (lock held on entry)."""
        if not self._in_flight:  # the slots belong to sends under way: they land soon
            self._room.wait(HARVEST_EVERY)
            return
        self._room.release()
        try:
            self._harvest(wait=HARVEST_EVERY)
        finally:
            self._room.acquire()

    def _settle_loop(self) -> None:
        """The settling thread: settles the watched runs Ray reports, and every ``HARVEST_EVERY``
        seconds whatever else has ended."""
        ended = self._ended
        next_look = time.monotonic() + HARVEST_EVERY
        while True:
            try:
                item = ended.get(timeout=max(0.0, next_look - time.monotonic()))
            except queue.Empty:
                pass  # time to look
            else:
                if item is None:
                    return
                flight, result = item
                self._finished(flight, result)
            if time.monotonic() >= next_look:
                try:
                    self._harvest(wait=0.0)
                except Exception as error:  # the settling thread must outlive a failed look
                    if self._started:
                        logger.warning(
                            "vivace could not look for ended Ray tasks: %s",
                            describe_exception(error),
                        )
                next_look = time.monotonic() + HARVEST_EVERY

    def _watch(self, flight: RayFlight) -> None:
        """Have Ray report this task's end (someone is called back, or waits, when it ends)."""
        if flight.watched:
            return
        flight.watched = True
        ended = self._ended
        flight.outcome._on_completed(lambda result: ended.put((flight, result)))

    def _harvest(self, wait: float) -> None:
        """Settle the Ray tasks in the window that have ended, waiting up to ``wait`` seconds for
        a first one."""
        flights = self._window()
        if not flights:
            return
        import ray

        outcomes = [flight.outcome for flight in flights]
        if wait > 0:
            ready, _ = ray.wait(outcomes, num_returns=1, timeout=wait)
            if not ready:
                return
        ready, _ = ray.wait(outcomes, num_returns=len(outcomes), timeout=0)
        if ready:
            keys = {_ref_key(ref) for ref in ready}
            self._collect([flight for flight in flights if _ref_key(flight.outcome) in keys])

    def _window(self) -> list[RayFlight]:
        """The runs in flight that one look covers: the oldest, and a slice of the rest that
        moves on every look (so runs stuck behind long ones are seen too)."""
        with self._lock:
            if len(self._in_flight) <= HARVEST_WINDOW:
                return list(self._in_flight.values())
            flights = list(self._in_flight.values())
        half = HARVEST_WINDOW // 2
        start = half + self._rotation % (len(flights) - half)
        self._rotation += half
        return flights[:half] + flights[start : start + half]

    def _collect(self, flights: list[RayFlight]) -> None:
        """Settle these ended Ray tasks, fetching their outcomes in one round trip."""
        with self._lock:
            flights = [f for f in flights if self._in_flight.get(id(f)) is f]
        if not flights:
            return
        import ray

        try:
            results = ray.get([flight.outcome for flight in flights])
        except Exception:  # one of them failed on Ray's side: fetch them one by one
            results = [_outcome_of(ray, flight) for flight in flights]
        for flight, result in zip(flights, results, strict=True):
            self._finished(flight, result)

    def _drain(self) -> None:
        """stop(wait=True): settle every Ray task still in flight (nobody waited for them)."""
        import ray

        while True:
            with self._lock:
                flights = list(self._in_flight.values())
                backlog = bool(self._backlog)
            if flights:
                outcomes = [flight.outcome for flight in flights]
                ray.wait(outcomes, num_returns=len(outcomes))
                self._collect(flights)
            elif backlog:
                self._send_backlog()
            else:
                return

    def _await(self, future: RayFuture, timeout: float | None) -> float | None:
        """A caller waits for ``future``: fetch its run's outcome now. Returns what is left of
        ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        import ray

        while not future.done() and self._started:
            flight = future.handle
            if not isinstance(flight, RayFlight):
                # Not sent yet, or to be sent again: have Ray report its end once it is sent.
                future.watched = True
                if isinstance(future.handle, RayFlight):
                    continue  # sent meanwhile
                break
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                result = ray.get(flight.outcome, timeout=remaining)
            except ray.exceptions.GetTimeoutError:
                break
            except Exception as error:
                result = error
            self._finished(flight, result)
            if future.handle is flight:
                break  # another thread is settling it
        return None if deadline is None else max(0.0, deadline - time.monotonic())


class RayFuture(RemoteFuture):
    """A Ray run's future: waiting on it fetches the run's outcome at once; a done-callback has
    Ray report the run's end (``watched``)."""

    __slots__ = ("watched",)

    def __init__(
        self, task_run: TaskRun, owner: OnDemandCompletion, item: int | None = None
    ) -> None:
        super().__init__(task_run, owner, item)
        self.watched = False

    def wait(self, timeout: float | None = None) -> State:
        if not self.done():
            owner = self.owner
            assert isinstance(owner, OnDemandCompletion)
            timeout = owner._await(self, timeout)
        return super().wait(timeout)

    def add_done_callback(self, callback: DoneCallback) -> None:
        if not self.done():
            self.watched = True
            handle = self.handle
            if isinstance(handle, RayFlight):
                owner = self.owner
                assert isinstance(owner, OnDemandCompletion)
                owner._watch(handle)
        super().add_done_callback(callback)


OnDemandCompletion._future_type = RayFuture


def _ref_key(ref: Any) -> bytes:
    """What identifies an ObjectRef (``ray.wait`` may hand back other objects for the same ref)."""
    return ref.binary()  # type: ignore[no-any-return]


def _outcome_of(ray: Any, flight: RayFlight) -> Any:
    """A Ray task's outcome, or the error Ray raises for it (its worker died, it was cancelled)."""
    try:
        return ray.get(flight.outcome)
    except Exception as error:
        return error
