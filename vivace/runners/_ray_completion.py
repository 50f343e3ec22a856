"""How :class:`~vivace.runners.ray.RayTaskRunner` learns that its Ray tasks ended: on demand.

Having Ray report every task's end (``ObjectRef._on_completed``) costs the driver about as much
CPU as submitting the task. So a run's end is learned by whoever needs it:

- a caller of ``future.result()`` fetches that run's outcome itself, at once, and a caller of
  ``wait()`` waits for its end (:meth:`OnDemandCompletion._await`); the flow run's end waits for
  every run (:meth:`OnDemandCompletion._drain`);
- a done-callback (``as_completed``, a downstream run of another runner) has Ray report that run's
  end (:meth:`OnDemandCompletion._watch`; for one run, without fetching its value);
- a sender that finds every in-flight slot taken looks for Ray tasks that ended;
- everything else (``future.done()``, ``future.state``, a retry after a dead worker) is settled by
  a *settling thread* that looks over the runs in flight every ``HARVEST_EVERY`` seconds (one
  ``ray.wait`` over the oldest ones and a rotating slice of the rest, one ``ray.get`` for those
  that ended).

The Ray task of one run has one return, the run's value (or its small RemoteFailure), so looking
must not fetch a big value to the driver: ``ray.wait`` is told not to fetch, and of the objects
found ready, those of at most ``FETCH_LIMIT`` bytes are fetched (Ray returns objects under 100
KiB inside the task's reply, so the driver holds them anyway) while a bigger one is a completed
run's value, left where it is (a failure never gets that big: :mod:`vivace.runners._ray_worker`).
Through Ray Client, where the driver does not know objects' sizes, every run travels as a batch
of one (two returns).

A caller of ``future.result()`` fetches the run's outcome, its value included, with a blocking
``ray.get`` (in turns of ``LOOK_AT_MOST`` seconds, so that stop() never shuts Ray down under
it): any Ray call costs the driver's main thread 50-100 us of CPU once it wakes up from waiting
(cold caches), so one call per run is the least it can cost; looking more often, or at more
runs, costs more. A caller of ``wait()`` only waits (``ray.wait``) and then settles the run
without fetching a big value.

What a Ray task's outcome means for its runs (``_finished``) is the runner's business. Ray is
imported only inside the methods, which run once the runner has found it installed.
"""

from __future__ import annotations

import abc
import collections
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from vivace.engine.remote_driver import RemoteFuture, record_deferred_pending
from vivace.engine.states import State, describe_exception
from vivace.runners.cluster import ClusterTaskRunner, Flight

if TYPE_CHECKING:
    from vivace.engine.futures import DoneCallback
    from vivace.engine.runs import TaskRun
    from vivace.engine.task_engine import TaskCall

logger = logging.getLogger("vivace.runners.ray")  # the Ray runner's one logger

HARVEST_EVERY = 0.05  # seconds between the settling thread's looks over the runs in flight
HARVEST_WINDOW = 256  # Ray tasks one look covers, at most
# Bytes: an ended run's bigger object is its value, not fetched (Ray's default limit for objects
# it returns inside the task's reply, which the driver holds anyway).
FETCH_LIMIT = 100 * 1024
PENDING_GRACE = 2.0  # seconds a sent run may wait to start before the driver records PENDING
LOOK_AT_MOST = 0.1  # seconds one look of a waiting caller lasts, at most (see _let_callers_leave)


class _LeftOnCluster:
    """The result of a one-run Ray task that ended with a value too big to fetch by the way."""

    def __repr__(self) -> str:
        return "<a value left on the cluster>"


LEFT_ON_CLUSTER: Any = _LeftOnCluster()
READY: Any = object()  # Ray reported that a watched one-run task's object exists


class Raised:
    """What fetching a Ray task's outcome raised (a task may return an exception as its value)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class RayFlight(Flight):
    """One Ray task in flight: ``outcome`` and ``ref`` (the values), one and the same for the Ray
    task of one run (``single``), two returns for a batch's."""

    __slots__ = ("outcome", "single", "timed_out", "watched")

    def __init__(
        self, outcome: Any, value: Any, calls: list[TaskCall], futures: list[RemoteFuture]
    ) -> None:
        super().__init__(value, calls, futures)
        self.outcome = outcome
        self.single = outcome is value
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
        # Ray tasks whose runs' PENDING state waits to be recorded where they start, with the
        # time after which the driver records it itself (see TaskRunner.defers_pending).
        self._deferred: collections.deque[tuple[float, RayFlight]] = collections.deque()
        # Callers of _await inside a look (Ray calls), which stop() lets come out before Ray goes.
        self._looking = threading.Lock()
        self._lookers = 0

    @abc.abstractmethod
    def _finished(self, flight: RayFlight, result: Any) -> None:
        """Settle the runs of this ended Ray task from ``result`` (its outcome, or Ray's error)."""

    def _start_settling(self) -> None:
        self._settler = threading.Thread(
            target=self._settle_loop, name="vivace-ray-settle", daemon=True
        )
        self._settler.start()

    def _stop_settling(self) -> None:
        self._deferred.clear()  # every run has ended, and recorded its PENDING state
        self._ended.put(None)
        if self._settler is not None and self._settler is not threading.current_thread():
            self._settler.join(timeout=30)
        self._settler = None

    def _on_settling_thread(self) -> bool:
        return threading.current_thread() is self._settler

    def _wait_for_room(self) -> None:
        """Every in-flight slot is taken: look for Ray tasks that ended (lock held on entry)."""
        if not self._in_flight:  # the slots belong to sends under way: they land soon
            self._wait_on_room(HARVEST_EVERY)
            return
        self._room.release()
        try:
            self._harvest(wait=HARVEST_EVERY)
        except Exception as error:  # the sender waits on; the settling thread looks too
            logger.warning(
                "vivace could not look for ended Ray tasks: %s", describe_exception(error)
            )
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
                try:
                    if result is READY:  # a one-run task: its object exists, maybe big
                        self._collect([flight])
                    else:
                        self._finished(flight, result)
                except Exception as error:  # the settling thread must outlive a failed one
                    self._finished(flight, Raised(error))
            if time.monotonic() >= next_look:
                self._record_overdue_pending()
                try:
                    self._harvest(wait=0.0)
                except Exception as error:  # the settling thread must outlive a failed look
                    if self._started:
                        logger.warning(
                            "vivace could not look for ended Ray tasks: %s",
                            describe_exception(error),
                        )
                next_look = time.monotonic() + HARVEST_EVERY

    def _defer_pending(self, flight: RayFlight) -> None:
        """``flight`` was sent with its runs' PENDING state for its worker to record."""
        self._deferred.append((time.monotonic() + PENDING_GRACE, flight))

    def _record_overdue_pending(self) -> None:
        """Record PENDING for the runs that have waited ``PENDING_GRACE`` seconds in Ray without
        ending (a worker that starts one meanwhile records it too: the store keeps one row)."""
        deferred, now = self._deferred, time.monotonic()
        while deferred and deferred[0][0] <= now:
            _, flight = deferred.popleft()
            if self._in_flight.get(id(flight)) is flight:
                for call in flight.calls:
                    record_deferred_pending(call)

    def _watch(self, flight: RayFlight) -> None:
        """Have Ray report this task's end (someone is called back, or waits, when it ends).

        A one-run task's object is its value: Ray reports only that it exists (``_on_ready``
        fetches nothing), and the settling thread settles it as a look would."""
        if flight.watched:
            return
        flight.watched = True
        ended = self._ended
        if flight.single:
            flight.outcome._on_ready(
                lambda error: ended.put((flight, READY if error is None else Raised(error)))
            )
            return

        def reported(result: Any) -> None:  # a batch's outcome is a tuple, or Ray's error
            ended.put((flight, Raised(result) if isinstance(result, BaseException) else result))

        flight.outcome._on_completed(reported)

    def _harvest(self, wait: float) -> None:
        """Settle the Ray tasks in the window that have ended, waiting up to ``wait`` seconds for
        a first one."""
        flights = self._window()
        if not flights:
            return
        import ray

        outcomes = [flight.outcome for flight in flights]
        if wait > 0:
            ready, _ = ray.wait(outcomes, num_returns=1, timeout=wait, fetch_local=False)
            if not ready:
                return
        ready, _ = ray.wait(outcomes, num_returns=len(outcomes), timeout=0, fetch_local=False)
        if ready:
            self._collect(_among(flights, ready))

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
        """Settle these ended Ray tasks, fetching their outcomes in one round trip, except a
        one-run Ray task's value of more than ``FETCH_LIMIT`` bytes."""
        import ray

        single = any(flight.single for flight in flights)  # never through Ray Client
        sizes = _sizes(ray, flights) if single else [None] * len(flights)
        with self._lock:
            in_flight = self._in_flight
            ended = [
                (flight, size)
                for flight, size in zip(flights, sizes, strict=True)
                if in_flight.get(id(flight)) is flight
            ]
        left = [f for f, size in ended if f.single and size is not None and size > FETCH_LIMIT]
        fetched = [f for f, _ in ended if f not in left]
        if fetched:
            try:
                results = ray.get([flight.outcome for flight in fetched])
            except Exception:  # one of them failed on Ray's side: fetch them one by one
                results = [_outcome_of(ray, flight) for flight in fetched]
            for flight, result in zip(fetched, results, strict=True):
                self._finished(flight, result)
        for flight in left:
            self._finished(flight, LEFT_ON_CLUSTER)

    def _drain(self) -> None:
        """stop(wait=True): settle every Ray task still in flight (nobody waited for them)."""
        import ray

        while True:
            with self._lock:
                flights = list(self._in_flight.values())
                backlog = bool(self._backlog)
            if flights:
                outcomes = [flight.outcome for flight in flights]
                ray.wait(outcomes, num_returns=len(outcomes), fetch_local=False)
                self._collect(flights)
            elif backlog:
                self._send_backlog()
            else:
                return

    def _await(self, future: RayFuture, timeout: float | None, fetch: bool = False) -> float | None:
        """A caller waits for ``future``: look for its run's end now (``fetch``: it wants the
        result). Returns what is left of ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        import ray

        while not future.done():
            flight = future.handle
            if not isinstance(flight, RayFlight):
                # Not sent yet, or to be sent again: have Ray report its end once it is sent.
                future.watched = True
                if isinstance(future.handle, RayFlight):
                    continue  # sent meanwhile
                break
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            look = LOOK_AT_MOST if remaining is None else min(remaining, LOOK_AT_MOST)
            with self._looking:
                if not self._started:
                    break
                self._lookers += 1
            try:
                settled = self._look(ray, flight, look, fetch)
            except Exception as error:  # Ray failed us (it went away): the run ends with it
                self._finished(flight, Raised(error))
                settled = True
            finally:
                with self._looking:
                    self._lookers -= 1
            if not settled and remaining is not None and remaining <= look:
                break  # timed out
            if settled and future.handle is flight:
                break  # another thread is settling it
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _let_callers_leave(self) -> None:
        """stop(): before Ray goes, wait for the callers inside a look to come out (a Ray call
        into a Ray that has shut down can crash the process); each look is short."""
        deadline = time.monotonic() + 10 * LOOK_AT_MOST
        # Polled: a notification from every look would cost each result() for this one wait.
        while self._lookers and time.monotonic() < deadline:
            time.sleep(0.002)

    def _look(self, ray: Any, flight: RayFlight, timeout: float, fetch: bool) -> bool:
        """Wait up to ``timeout`` seconds for ``flight`` to end, and settle it; False if it has
        not ended in time. With ``fetch`` (the caller wants the result), one blocking ``ray.get``
        brings the outcome, the value of a one-run task included: one Ray call per wake-up,
        which costs less than anything that looks more than once. Without it, a value over
        ``FETCH_LIMIT`` bytes stays where it is."""
        if fetch or not flight.single:
            try:
                result = ray.get(flight.outcome, timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                return False
            except Exception as error:
                result = Raised(error)
            self._finished(flight, result)
            return True
        found, _ = ray.wait([flight.outcome], timeout=timeout, fetch_local=False)
        if not found:
            return False
        self._collect([flight])
        return True


class RayFuture(RemoteFuture):
    """A Ray run's future: ``result()`` fetches the run's outcome at once, ``wait()`` waits for
    its end; a done-callback has Ray report the run's end (``watched``)."""

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

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        if not self.done():
            owner = self.owner
            assert isinstance(owner, OnDemandCompletion)
            timeout = owner._await(self, timeout, fetch=True)
        return super().result(timeout, raise_on_failure)

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


def _among(flights: list[RayFlight], refs: list[Any]) -> list[RayFlight]:
    """The flights whose outcome is one of ``refs``, in their order."""
    keys = {_ref_key(ref) for ref in refs}
    return [flight for flight in flights if _ref_key(flight.outcome) in keys]


def _sizes(ray: Any, flights: list[RayFlight]) -> list[int | None]:
    """The sizes of these Ray tasks' outcome objects, from the driver's own bookkeeping (no round
    trip): None until the task has returned (and for one cancelled or lost, whose error object
    Ray made on the driver)."""
    locations = ray.experimental.get_local_object_locations([f.outcome for f in flights])
    none: dict[str, Any] = {}
    return [locations.get(flight.outcome, none).get("object_size") for flight in flights]


def _ref_key(ref: Any) -> bytes:
    """What identifies an ObjectRef (``ray.wait`` may hand back other objects for the same ref)."""
    return ref.binary()  # type: ignore[no-any-return]


def _outcome_of(ray: Any, flight: RayFlight) -> Any:
    """A Ray task's outcome, or the error Ray raises for it (its worker died, it was cancelled)."""
    try:
        return ray.get(flight.outcome)
    except Exception as error:
        return Raised(error)
