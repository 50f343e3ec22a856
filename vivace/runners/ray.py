"""Runs submitted tasks on Ray: a local Ray for the flow run, or a cluster reached by address.

Each task run is one Ray task (``task.map(batch_size=K)`` makes one Ray task of K runs). On the
worker it runs through vivace's own state machine (:mod:`vivace.engine.remote`): retries happen
there, and the worker process writes states and logs straight to the database through its own
batched writer, configured from the flow's settings, which travel with the task. What does not
depend on Ray (dispatch, in-flight slots, cancellation, held results) lives in
:mod:`vivace.runners.cluster`.

- **Two returns per Ray task**: a small *outcome* (completed; completed with a scalar value, which
  Ray inlines in the reply anyway; or the failure) and the *value*, an ``ObjectRef`` that stays on
  the cluster until ``future.result()`` asks for it.
- **One argument**: the run's call (or a batch's calls) travels as bytes pickled on the driver by
  the C pickler (``_payload``): Ray's own serialization of a Python object argument costs several
  times as much per task. What only Ray may pickle (an ``ObjectRef`` a user passed), what the C
  pickler cannot (a lambda) or would name in ``__main__``, and large buffers go to Ray as objects.
- **Completion is learned when someone needs it**: having Ray report every task's end
  (``ObjectRef._on_completed``) costs the driver about as much CPU as submitting the task. So a
  run's end is learned by whoever needs it: a caller of ``future.result()`` or ``wait()`` (and the
  flow run's end, which waits for every run) fetches that run's outcome itself, at once; a
  done-callback (``as_completed``, a downstream run of another runner) has Ray report that run's
  end; a sender that finds every in-flight slot taken looks for Ray tasks that ended. Everything
  else (``future.done()``, ``future.state``, a retry after a dead worker) is settled by a
  *settling thread* that looks over the runs in flight every ``HARVEST_EVERY`` seconds (one
  ``ray.wait`` over the oldest ones and a rotating slice of the rest, one ``ray.get`` for those
  that ended).
- **Dependencies** ride Ray's own ``ObjectRef``: a future passed to a downstream task (also inside
  lists, tuples, sets and dicts) is handed to ``.remote()`` as its value ``ObjectRef``, so Ray
  orders the runs and moves the data worker to worker.
- **Records**: a worker does not write out its records before its Ray task returns (one
  transaction per Ray task would cost more than the task). When a run ends COMPLETED, the worker
  asks a helper thread of its process to flush its writer within ``FLUSH_SOON`` seconds, or as
  soon as no run has completed there for ``FLUSH_IDLE`` seconds, whatever
  ``VIVACE_RECORDER_FLUSH_INTERVAL`` says (one transaction per burst of runs, off the task's
  path); a run that did not complete is flushed before its Ray task returns, since its failure is
  logged after its final state. Ray gives no way to run code on every worker process, so before
  the flow run's final state :meth:`RayTaskRunner.flush_records` waits until the database shows
  every run a worker reported COMPLETED in a final state: a worker's writer is first in, first
  out, so that run's earlier states and logs are committed too. Runs the driver ended itself
  (cancelled, crashed, timed out) are recorded by the driver's writer, ahead of the flow run's
  final state. The wait is bounded (the writer's retry seconds plus ``FLUSH_MARGIN``): when a
  worker cannot reach the database, its records go to its journal and the flow run ends with a
  warning.
- **Placement**: ``@task(runner_options={"num_cpus": .., "num_gpus": .., "memory": ..,
  "resources": {..}})`` goes to ``.options(...)``, so pending resource demand drives an
  autoscaling cluster.
- **Failures**: the exception's type, message and traceback arrive intact at ``future.result()``.
  Ray does not re-run tasks by itself (``max_retries=0``): a run whose worker process or node dies
  ends CRASHED, and is sent again if it has retries left.
- **Timeouts**: the worker's engine ends the run FAILED [TimedOut] at the deadline, counted from
  the start of the attempt on the worker (time queued in Ray does not count), and retries there.
  The function is interrupted at its next Python bytecode; code blocked in C (``time.sleep``, a
  socket read) runs on in a helper thread of that worker process until the call returns, using CPU
  or memory but no task slot. When the worker cannot even report the timeout (code holding the
  GIL), the driver's backstop cancels the Ray task with ``ray.cancel(ref, force=True)`` (Ray kills
  the worker process) once the run's whole budget has passed since it was sent to Ray
  (``(timeout + retry delay) x attempts + BACKSTOP_GRACE``), and records FAILED [TimedOut].
- **Cleanup**: a flow run that fails or is interrupted cancels its outstanding Ray tasks with
  ``ray.cancel(force=True)`` and records them CANCELLED. A local Ray that this runner started is
  always shut down; a cluster reached by address is left running: when the flow run ends, results
  still held by the caller's futures are fetched and the driver disconnects, releasing everything
  the flow run owned there.
- **Ray Client** (``address="ray://host:10001"``): the driver talks to the cluster through the
  head's client server; everything above works the same through it (the workers still write their
  records straight to the database, and the driver checks the database itself at the flow run's
  end). A connection that fails is undone before the error is raised (Ray would otherwise stay in
  client mode in this process and send later local ``ray.init`` calls astray), and the error names
  the address.
- **Backpressure**: at most ``max_in_flight`` Ray tasks are submitted and unfinished at a time
  (Ray itself stops scheduling well before 100,000 pending tasks); ``.submit()`` waits for room.

Example::

    @flow(task_runner=RayTaskRunner(address="ray://10.0.0.5:10001"))
    def pipeline(): ...
"""

from __future__ import annotations

import copyreg
import io
import logging
import pickle
import queue
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from vivace.engine.options import RAY_RUNNER_OPTIONS
from vivace.engine.remote import (
    PartialBatch,
    RemoteFailure,
    RemoteSetup,
    flush_process_records,
    run_remote,
    run_remote_batch,
)
from vivace.engine.remote_driver import (
    RemoteCompleted,
    RemoteFuture,
    RemoteValue,
    cancel_on_driver,
    completed_outcomes,
    end_on_driver,
    fail_on_driver,
)
from vivace.engine.states import (
    FINAL_TYPES,
    TIMED_OUT,
    Failed,
    State,
    StateType,
    describe_exception,
)
from vivace.engine.timeouts import timeout_error
from vivace.exceptions import ConfigurationError, MissingExtraError, VivaceError
from vivace.runners.cluster import ClusterTaskRunner, Flight

if TYPE_CHECKING:
    from vivace.engine.futures import DoneCallback
    from vivace.engine.runs import TaskRun
    from vivace.engine.task_engine import TaskCall

logger = logging.getLogger("vivace.runners.ray")

FLUSH_TIMEOUT = 30.0  # seconds a worker may take to write out its records
FLUSH_SOON = 0.05  # seconds after a completed run by which its worker writes out its records
FLUSH_IDLE = 0.01  # seconds without a completed run after which a worker writes out at once
FLUSH_MARGIN = 5.0  # seconds past the writer's retry time that flush_records waits, at most
BACKSTOP_GRACE = 10.0  # seconds past a timed run's budget before the driver force-cancels it
HARVEST_EVERY = 0.05  # seconds between the settling thread's looks over the runs in flight
HARVEST_WINDOW = 256  # Ray tasks one look covers, at most
# Values Ray inlines in the task's reply anyway: they come back with the outcome.
SMALL_TYPES = frozenset({int, float, complex, bool, type(None)})

# Outcome kinds (the first return of every Ray task).
_DONE = 0  # completed; the value stays on the cluster
_DONE_SMALL = 1  # completed; the outcome carries the (scalar) value or values too
_NOT_DONE = 2  # some run did not complete: the outcome carries the RemoteFailure / PartialBatch


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise MissingExtraError(
            f"RayTaskRunner needs ray, which is not installed ({error}); "
            "install it with: pip install 'vivace[ray]'"
        ) from None
    return ray


# -- on the worker -------------------------------------------------------------------------------


def _outcome(value: Any, database_url: str) -> tuple[Any, Any]:
    kind = type(value)
    if kind is RemoteFailure or kind is PartialBatch:
        # A failure is logged after its final state: written out before the driver hears of it.
        flush_process_records(database_url, FLUSH_TIMEOUT)
        return (_NOT_DONE, value), value
    _flush_soon(database_url)
    if kind in SMALL_TYPES:
        return (_DONE_SMALL, value), value
    if kind is list and all(type(item) in SMALL_TYPES for item in value):
        return (_DONE_SMALL, value), value
    return (_DONE, None), value


_soon = threading.Event()  # set: some run completed since the helper's last flush
_soon_urls: set[str] = set()
_last_completed = 0.0  # time.monotonic() when this worker last completed a run
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()


def _flush_soon(database_url: str) -> None:
    """Have this process's writer for ``database_url`` write out within ``FLUSH_SOON`` seconds,
    or once no run has completed here for ``FLUSH_IDLE`` seconds, whichever comes first.

    Called after the run's records are queued. The helper clears the event before it flushes, so
    records queued before a nudge it has not seen are behind that flush or the next one.
    """
    global _flusher, _last_completed
    _soon_urls.add(database_url)
    _last_completed = time.monotonic()
    if not _soon.is_set():
        _soon.set()
    if _flusher is None:
        with _flusher_lock:
            if _flusher is None:
                _flusher = threading.Thread(
                    target=_flush_loop, name="vivace-ray-flush", daemon=True
                )
                _flusher.start()


def _flush_loop() -> None:
    while True:
        _soon.wait()
        # One transaction for the runs that complete meanwhile; at once when they stop coming
        # (the last runs of a flow run: the driver is waiting for them at its end).
        latest = time.monotonic() + FLUSH_SOON
        while True:
            now = time.monotonic()
            quiet = _last_completed + FLUSH_IDLE
            if now >= latest or now >= quiet:
                break
            time.sleep(min(latest, quiet) - now)
        _soon.clear()
        for url in list(_soon_urls):
            try:
                flush_process_records(url, FLUSH_TIMEOUT)
            except Exception:  # the helper must outlive any one failed flush
                logger.exception("vivace could not flush a Ray worker's records")


def _run_one(payload: Any, *remote_values: Any) -> tuple[Any, Any]:
    database_url, call = _unpack(payload)
    return _outcome(run_remote(call, *remote_values), database_url)


def _run_batch(payload: Any, *remote_values: Any) -> tuple[Any, Any]:
    database_url, calls = _unpack(payload)
    return _outcome(run_remote_batch(calls, *remote_values), database_url)


def _unpack(payload: Any) -> Any:
    return pickle.loads(payload) if type(payload) is bytes else payload


_remote_functions: dict[str, Any] = {}


def _remote(name: str) -> Any:
    """The Ray remote function (made once per process): two returns, no retries by Ray."""
    fn = _remote_functions.get(name)
    if fn is None:
        target = _run_batch if name == "batch" else _run_one
        fn = _ray().remote(num_returns=2, max_retries=0)(target)
        _remote_functions[name] = fn
    return fn


# -- on the driver -------------------------------------------------------------------------------


class RayTaskRunner(ClusterTaskRunner["_Flight"]):
    """Task runs on Ray (see the module documentation for what happens where).

    - no ``address``: a local Ray for the flow run (``ray.init(**init_kwargs)``), shut down at
      its end; if Ray is already initialised in this process, that Ray is used and left running.
    - ``address``: ``"auto"``, ``"ray://host:10001"`` (Ray Client) or a head's ``"host:port"``:
      an existing cluster, used and left running.
    - ``init_kwargs`` go to ``ray.init`` (``runtime_env=``, ``namespace=``, ``num_cpus=``, ...).
    - ``max_in_flight``: Ray tasks submitted and unfinished at once, at most.
    """

    _engine = "Ray"
    _logger = logger

    def __init__(
        self,
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
        max_in_flight: int = 10_000,
    ) -> None:
        _ray()
        if address is not None and not isinstance(address, str):
            raise ConfigurationError(
                "RayTaskRunner: address must be 'auto', 'ray://host:10001' or a head's "
                f"'host:port', got {address!r}"
            )
        if init_kwargs is not None and not isinstance(init_kwargs, dict):
            raise ConfigurationError(
                f"RayTaskRunner: init_kwargs must be a dict of keyword arguments for ray.init, "
                f"got {init_kwargs!r}"
            )
        if init_kwargs and "address" in init_kwargs:
            raise ConfigurationError(
                "RayTaskRunner: give the cluster as address=..., not inside init_kwargs"
            )
        super().__init__(max_in_flight)
        self.address = address
        self.init_kwargs = init_kwargs
        self._started = False
        self._owns_ray = False  # this runner called ray.init, so it calls ray.shutdown
        self._settler: threading.Thread | None = None
        # Ray tasks whose end Ray reported (watched ones), for the settling thread; None: stop.
        self._ended: queue.SimpleQueue[tuple[_Flight, Any] | None] = queue.SimpleQueue()
        self._rotation = 0  # where the rotating slice of the runs in flight starts
        self._timers: list[threading.Timer] = []
        # Runs a worker reported COMPLETED, by flow run, not yet seen final in the database.
        self._unconfirmed: dict[uuid.UUID, set[uuid.UUID]] = {}
        self._last_completed = 0.0  # time.monotonic() when the driver last learned of one

    def duplicate(self) -> RayTaskRunner:
        return RayTaskRunner(self.address, self.init_kwargs, self.max_in_flight)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        ray = _ray()
        if ray.is_initialized():
            owns = False  # a Ray this process already uses: leave it as it is
        else:
            self._init(ray)
            owns = True
        try:
            _picklable_exceptions()
            self._setup = RemoteSetup()
            self._settler = threading.Thread(
                target=self._settle_loop, name="vivace-ray-settle", daemon=True
            )
            self._settler.start()
        except BaseException:
            if owns:
                ray.shutdown()
            raise
        self._owns_ray = owns
        self._started = True

    def _init(self, ray: Any) -> None:
        """``ray.init`` for this runner; a failed attempt is undone, and the error names where.

        No address means a local Ray of its own (``address="local"``): Ray would otherwise join
        a cluster that ``ray start`` left on this machine.
        """
        kwargs = dict(self.init_kwargs or {})
        if self.address is None:
            kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", True)
        try:
            ray.init(address=self.address or "local", **kwargs)
        except Exception as error:
            # A failed Ray Client connect leaves the process in client mode; a failed local start
            # may leave half a node. ray.shutdown() undoes either.
            try:
                ray.shutdown()
            except Exception as problem:
                logger.warning("could not undo a failed ray.init: %s", describe_exception(problem))
            where = (
                "start a local Ray"
                if self.address is None
                else f"connect to the Ray cluster at {self.address!r}"
            )
            hint = ""
            if self.address is not None and self.address.startswith("ray://"):
                hint = (
                    "; is a Ray Client server listening there (`ray start --head "
                    "--ray-client-server-port=<port>`)?"
                )
            raise VivaceError(
                f"RayTaskRunner could not {where}: {describe_exception(error)}{hint}"
            ) from error

    def stop(self, wait: bool = True) -> None:
        if not self._started:
            return
        ray = _ray()
        try:
            if wait:
                self._drain()
            self._wind_down(wait, "the flow run ended first; its Ray task was cancelled (force)")
            for timer in self._timers:
                timer.cancel()
            self._timers = []
        finally:
            self._started = False
            self._setup = None
            self._ended.put(None)
            if self._settler is not None and self._settler is not threading.current_thread():
                self._settler.join(timeout=30)
            self._settler = None
            if self._owns_ray:
                self._owns_ray = False
                ray.shutdown()

    def flush_records(self) -> None:
        """Wait until the database shows every run a worker reported COMPLETED in a final state.

        The workers write out on their own, within ``FLUSH_SOON`` seconds of a run completing
        (see the module documentation): the first look is ``FLUSH_IDLE`` seconds after the last
        run this driver saw complete. Then it polls the database, for at most the writer's retry
        seconds plus ``FLUSH_MARGIN``, and warns.
        """
        setup = self._setup
        with self._lock:
            unconfirmed, self._unconfirmed = self._unconfirmed, {}
            last_completed = self._last_completed
        if setup is None or not unconfirmed:
            return
        retry_seconds = float(setup.env.get("recorder_retry_seconds", 5.0))
        deadline = time.monotonic() + FLUSH_SOON + retry_seconds + FLUSH_MARGIN
        first_look = last_completed + FLUSH_IDLE - time.monotonic()
        if first_look > 0:
            time.sleep(first_look)
        delay = 0.005
        problem: BaseException | None = None
        while True:
            try:
                _drop_final(setup.database_url, unconfirmed)
            except Exception as error:  # the database is unreachable: the workers journal too
                problem = error
            if not unconfirmed or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        if unconfirmed:
            missing = sum(len(pending) for pending in unconfirmed.values())
            reason = f" ({describe_exception(problem)})" if problem is not None else ""
            logger.warning(
                "%d task runs completed on Ray workers but are not in the database yet%s; "
                "their workers write them when the database can take them (or journal them)",
                missing,
                reason,
            )

    def _gather(self, refs: list[Any]) -> list[Any]:
        return list(_ray().get(refs))

    def _cancel_native(self, flights: list[_Flight]) -> None:
        ray = _ray()
        for flight in flights:
            try:
                ray.cancel(flight.outcome, force=True)
            except Exception as error:
                logger.warning("could not cancel a Ray task: %s", describe_exception(error))

    # -- submitting ------------------------------------------------------------------------------

    def _dispatch(
        self, calls: list[TaskCall], futures: list[RemoteFuture], settled_only: bool = False
    ) -> None:
        if not self._started:
            raise RuntimeError("RayTaskRunner.submit() called before start()")
        super()._dispatch(calls, futures, settled_only)

    def _send(self, calls: list[TaskCall], futures: list[RemoteFuture]) -> None:
        setup = self._setup
        if not self._started or setup is None:  # the flow run ended while these waited
            self._cancel_unsent(calls, futures)
            return
        prepared = self._prepare(setup, calls, futures)
        if prepared is None or not self._slot_or_backlog(calls, futures):
            return
        handover, remote_calls = prepared
        task = calls[0].task
        batch = futures[0].item is not None
        fn = _remote("batch" if batch else "one")
        options = _placement(task.runner_options)
        if options:
            fn = fn.options(**options)
        payload = _payload((setup.database_url, remote_calls if batch else remote_calls[0]))
        try:
            outcome, value = fn.remote(payload, *handover.remote)
        except Exception as problem:
            self._unsent(calls, futures, problem)
            return
        flight = _Flight(outcome, value, calls, futures)
        with self._lock:
            self._in_flight[id(flight)] = flight
        watched = False
        for future in futures:  # after the flight is in flight: a waiter may settle it now
            future.handle = flight
            watched = watched or (isinstance(future, _RayFuture) and future.watched)
        if watched:
            self._watch(flight)
        if task.timeout_seconds is not None:
            self._arm_backstop(flight)

    def _stopping(self) -> bool:
        return not self._started

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

    def _arm_backstop(self, flight: _Flight) -> None:
        task = flight.calls[0].task
        assert task.timeout_seconds is not None
        attempts = task.retries + 1
        delays = sum(task.retry_delay_for(n) for n in range(1, attempts))
        budget = task.timeout_seconds * attempts * len(flight.calls) + delays + BACKSTOP_GRACE
        timer = threading.Timer(budget, self._backstop, (flight,))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)
        if len(self._timers) > 1024:
            self._timers = [t for t in self._timers if t.is_alive()]

    def _backstop(self, flight: _Flight) -> None:
        """A timed run's worker never reported back: force-cancel its Ray task (see module doc)."""
        with self._lock:
            if self._in_flight.get(id(flight)) is not flight:
                return
            flight.timed_out = True
        try:
            _ray().cancel(flight.outcome, force=True)
        except Exception as error:
            logger.warning("could not cancel a timed-out Ray task: %s", describe_exception(error))

    # -- learning that Ray tasks ended (see "Completion is learned when someone needs it") -------

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

    def _watch(self, flight: _Flight) -> None:
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
        ray = _ray()
        outcomes = [flight.outcome for flight in flights]
        if wait > 0:
            ready, _ = ray.wait(outcomes, num_returns=1, timeout=wait)
            if not ready:
                return
        ready, _ = ray.wait(outcomes, num_returns=len(outcomes), timeout=0)
        if ready:
            keys = {_ref_key(ref) for ref in ready}
            self._collect([flight for flight in flights if _ref_key(flight.outcome) in keys])

    def _window(self) -> list[_Flight]:
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

    def _collect(self, flights: list[_Flight]) -> None:
        """Settle these ended Ray tasks, fetching their outcomes in one round trip."""
        with self._lock:
            flights = [f for f in flights if self._in_flight.get(id(f)) is f]
        if not flights:
            return
        ray = _ray()
        try:
            results = ray.get([flight.outcome for flight in flights])
        except Exception:  # one of them failed on Ray's side: fetch them one by one
            results = [_outcome_of(ray, flight) for flight in flights]
        for flight, result in zip(flights, results, strict=True):
            self._finished(flight, result)

    def _drain(self) -> None:
        """stop(wait=True): settle every Ray task still in flight (nobody waited for them)."""
        ray = _ray()
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

    def _await(self, future: _RayFuture, timeout: float | None) -> float | None:
        """A caller waits for ``future``: fetch its run's outcome now. Returns what is left of
        ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ray = _ray()
        while not future.done() and self._started:
            flight = future.handle
            if not isinstance(flight, _Flight):
                # Not sent yet, or to be sent again: have Ray report its end once it is sent.
                future.watched = True
                if isinstance(future.handle, _Flight):
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

    def _finished(self, flight: _Flight, result: Any) -> None:
        if self._landed(id(flight)) is None:
            return  # the runner stopped and settled it already
        try:
            self._settle(flight, result)
        except BaseException as error:
            logger.exception("vivace could not settle a Ray task")
            for call, future in zip(flight.calls, flight.futures, strict=True):
                if not future.done():
                    future.set_final_state(fail_on_driver(call, error))
        self._send_backlog()

    def _settle(self, flight: _Flight, result: Any) -> None:
        calls, futures = flight.calls, flight.futures
        if isinstance(result, tuple):
            kind, payload = result
            if kind == _NOT_DONE:
                outcomes = [payload] if type(payload) is RemoteFailure else list(payload)
                states = completed_outcomes(outcomes, [call.run.id for call in calls])
                value = RemoteValue(flight.ref, self._fetch)
                value.set(payload)
                self._values.add(value)  # its ref is let go when the flow run ends
                for future, state in zip(futures, states, strict=True):
                    completed = state.type is StateType.COMPLETED
                    future.handle = value if completed else None
                    future.set_final_state(state)
                return
            self._to_confirm(calls)
            value = RemoteValue(flight.ref, self._fetch)
            if kind == _DONE_SMALL:
                value.set(payload)
            self._values.add(value)  # its ref is let go when the flow run ends
            for future in futures:
                future.handle = value
                future.set_final_state(RemoteCompleted(value, future.item, future.task_run.id))
            return
        ray = _ray()
        error = result if isinstance(result, BaseException) else VivaceError(repr(result))
        for call, future in zip(calls, futures, strict=True):
            future.handle = None
            if flight.timed_out:
                task = call.task
                assert task.timeout_seconds is not None
                timeout = timeout_error("task", call.run.name, task.timeout_seconds)
                state = Failed(timeout, name=TIMED_OUT)
                future.set_final_state(end_on_driver(call, state, timeout))
            elif isinstance(error, ray.exceptions.TaskCancelledError):
                future.set_final_state(cancel_on_driver(call, "cancelled on the Ray cluster"))
            elif isinstance(
                error,
                (
                    ray.exceptions.WorkerCrashedError,
                    ray.exceptions.NodeDiedError,
                    ray.exceptions.ObjectLostError,
                    ray.exceptions.LocalRayletDiedError,
                ),
            ):
                self._worker_died(call, future, describe_exception(error))
            else:
                future.set_final_state(fail_on_driver(call, error))

    def _to_confirm(self, calls: list[TaskCall]) -> None:
        """Runs a worker completed: flush_records waits for them in the database."""
        with self._lock:
            self._last_completed = time.monotonic()
            for call in calls:
                flow_run_id = call.run.flow_run_id
                if flow_run_id is not None:
                    self._unconfirmed.setdefault(flow_run_id, set()).add(call.run.id)

    def _fetch(self, value: RemoteValue) -> Any:
        if value.ref is None:
            raise VivaceError(
                "the result of this task run stayed on the Ray cluster, which its flow run has "
                "released; fetch results with future.result() inside the flow"
            )
        try:
            return _ray().get(value.ref)
        except Exception as error:
            raise VivaceError(
                f"could not fetch the result from the Ray cluster: {describe_exception(error)}"
            ) from error

    def __repr__(self) -> str:
        return f"RayTaskRunner(address={self.address!r})"


class _RayFuture(RemoteFuture):
    """A Ray run's future: waiting on it fetches the run's outcome at once; a done-callback has
    Ray report the run's end (``watched``)."""

    __slots__ = ("watched",)

    def __init__(self, task_run: TaskRun, owner: RayTaskRunner, item: int | None = None) -> None:
        super().__init__(task_run, owner, item)
        self.watched = False

    def wait(self, timeout: float | None = None) -> State:
        if not self.done():
            owner = self.owner
            assert isinstance(owner, RayTaskRunner)
            timeout = owner._await(self, timeout)
        return super().wait(timeout)

    def add_done_callback(self, callback: DoneCallback) -> None:
        if not self.done():
            self.watched = True
            handle = self.handle
            if isinstance(handle, _Flight):
                owner = self.owner
                assert isinstance(owner, RayTaskRunner)
                owner._watch(handle)
        super().add_done_callback(callback)


RayTaskRunner._future_type = _RayFuture


class _Flight(Flight):
    """One Ray task in flight: its two returns (``outcome``, and ``ref``: the value)."""

    __slots__ = ("outcome", "timed_out", "watched")

    def __init__(
        self, outcome: Any, value: Any, calls: list[TaskCall], futures: list[RemoteFuture]
    ) -> None:
        super().__init__(value, calls, futures)
        self.outcome = outcome
        self.timed_out = False
        self.watched = False  # Ray reports its end (see RayTaskRunner._watch)


class _Refused(Exception):
    """Raised for an object that only Ray's own serialization may pickle (see ``_payload``)."""


def _refuse(obj: Any) -> Any:
    raise _Refused(type(obj).__name__)


class _Pickler(pickle.Pickler):
    """The C pickler, refusing what Ray must track itself (object refs, actor handles)."""

    dispatch_table: dict[type, Any]


_PAYLOAD_LIMIT = 64 * 1024  # bytes; bigger payloads go to Ray as objects (zero-copy buffers)


def _payload(value: Any) -> Any:
    """``value`` (the runs' calls) as it goes to ``.remote()``: pickled here when possible.

    Ray serializes a Python object argument with its own cloudpickle, at several times the cost
    of the C pickler per task, and bytes pass through Ray untouched. Pickled here unless the
    value holds something only Ray may pickle (an ``ObjectRef`` or actor handle a user passed,
    which Ray must count), something the C pickler cannot pickle (a lambda) or would pickle by
    a reference the worker cannot follow (anything defined in ``__main__``), or large buffers
    (which Ray moves without copying): then Ray gets the objects, as before.
    """
    if _Pickler.__dict__.get("dispatch_table") is None:
        _Pickler.dispatch_table = _refusing_table()
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=5).dump(value)
    except Exception:
        return value
    blob = buffer.getvalue()
    if len(blob) > _PAYLOAD_LIMIT or _MAIN_MODULE in blob:
        return value
    return blob


# How a pickle (protocol 4+) names the module ``__main__`` when it refers to something defined
# there (a string that merely contains "__main__", such as a task key, does not match).
_MAIN_MODULE = pickle.SHORT_BINUNICODE + bytes([len("__main__")]) + b"__main__"


class _RefusingTable(dict):  # type: ignore[type-arg]
    """The pickler's dispatch table: refusals first, then copyreg's (as registered right now)."""

    def __missing__(self, kind: type) -> Any:
        return copyreg.dispatch_table[kind]


def _refusing_table() -> dict[type, Any]:
    ray = _ray()
    refused: list[Any] = [ray.ObjectRef, ray.actor.ActorHandle]
    try:
        from ray.util.client.common import ClientActorHandle, ClientObjectRef

        refused += [ClientObjectRef, ClientActorHandle]
    except ImportError:  # pragma: no cover - Ray without its client extra
        pass
    return _RefusingTable(dict.fromkeys(refused, _refuse))


def _drop_final(database_url: str, unconfirmed: dict[uuid.UUID, set[uuid.UUID]]) -> None:
    """Drop from ``unconfirmed`` (run ids by flow run) the runs the database shows final.

    Reads the ids of the flow run's final runs; on SQLite as raw 16-byte values (making a UUID of
    each of thousands of rows, at every look, would cost more than the look).
    """
    import sqlalchemy as sa

    from vivace.store import database, schema

    engine = database.get_engine(database_url)
    table = schema.task_runs
    raw = engine.dialect.name == "sqlite"
    column = sa.type_coerce(table.c.id, sa.LargeBinary) if raw else table.c.id
    final = [str(state_type) for state_type in FINAL_TYPES]
    with database.connect(engine) as connection:
        for flow_run_id in list(unconfirmed):
            query = sa.select(column).where(
                table.c.flow_run_id == flow_run_id, table.c.state_type.in_(final)
            )
            found = connection.execute(query).scalars()
            pending = unconfirmed[flow_run_id]
            if raw:
                done = {bytes(value) for value in found}
                pending.difference_update([run for run in pending if run.bytes in done])
            else:
                pending.difference_update(found)
            if not pending:
                del unconfirmed[flow_run_id]


def _ref_key(ref: Any) -> bytes:
    """What identifies an ObjectRef (``ray.wait`` may hand back other objects for the same ref)."""
    return ref.binary()  # type: ignore[no-any-return]


def _outcome_of(ray: Any, flight: _Flight) -> Any:
    """A Ray task's outcome, or the error Ray raises for it (its worker died, it was cancelled)."""
    try:
        return ray.get(flight.outcome)
    except Exception as error:
        return error


def _picklable_exceptions() -> None:
    """Let exceptions pickle with their attributes and tracebacks (as distributed does on import).

    A failed state passed as an argument carries its exception to the worker; an exception class
    with a custom ``__init__`` cannot be unpickled there without tblib.
    """
    try:
        from tblib import pickling_support
    except ImportError:  # pragma: no cover - depends on the extras installed
        return
    pickling_support.install()


def _placement(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The task's runner_options that Ray's ``.options()`` takes (Dask's are ignored here)."""
    if not options:
        return None
    return {key: options[key] for key in RAY_RUNNER_OPTIONS if key in options} or None
