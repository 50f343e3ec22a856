"""Runs submitted tasks on Ray: a local Ray for the flow run, or a cluster reached by address.

Each task run is one Ray task (``task.map(batch_size=K)`` makes one Ray task of K runs). On the
worker it runs through vivace's own state machine (:mod:`vivace.engine.remote`): retries happen
there, and the worker process writes states and logs straight to the database through its own
batched writer, configured from the flow's settings, which travel with the task. What does not
depend on Ray (dispatch, in-flight slots, cancellation, held results) lives in
:mod:`vivace.runners.cluster`. This module is the adapter (start, stop, submit, what a Ray task's
outcome means); its parts live in four private modules:

- :mod:`vivace.runners._ray_worker`, what runs in the Ray worker. **One return per run**: the
  run's value, an ``ObjectRef`` that stays on the cluster until ``future.result()`` asks for it,
  or its small failure. A batch's Ray task has two: a small *outcome* and the *values*. The
  worker writes out its records soon after its runs end.
- :mod:`vivace.runners._ray_payload`, **one argument**: the run's call (or a batch's calls)
  travels as bytes pickled on the driver by the C pickler, much cheaper than Ray's own
  serialization of a Python object; what only Ray may (or can) pickle goes to Ray as objects.
- :mod:`vivace.runners._ray_submit`, **Ray's preamble once per flow run**: ``.remote()`` resolves
  the task's options again on every call; the runner sends its first Ray task with ``.remote()``
  and the next ones through the closure Ray built for it (Ray still sends every task).
- :mod:`vivace.runners._ray_completion`, **completion is learned when someone needs it**: a
  caller of ``future.result()`` fetches that run's value itself, a caller of ``wait()`` waits
  for its end, a done-callback has Ray report that run's end, and a settling thread looks over
  the runs in flight every ``HARVEST_EVERY`` seconds for the rest (having Ray report every
  task's end costs the driver about as much CPU as submitting the task). Only ``result()``
  brings a value over ``FETCH_LIMIT`` bytes to the driver.

What the runner does:

- **Dependencies** ride Ray's own ``ObjectRef``: a future passed to a downstream task (also inside
  lists, tuples, sets and dicts) is handed to ``.remote()`` as its value ``ObjectRef``, so Ray
  orders the runs and moves the data worker to worker.
- **Records**: a worker does not write out its records before its Ray task returns, but within
  ``FLUSH_SOON`` seconds of a run completing (see :mod:`vivace.runners._ray_worker`). Ray gives
  no way to run code on every worker process, so before the flow run's final state
  :meth:`RayTaskRunner.flush_records` waits until the database shows every run a worker reported
  COMPLETED in a final state: a worker's writer is first in, first out, so that run's earlier
  states and logs are committed too. Runs the driver ended itself (cancelled, crashed, timed out)
  are recorded by the driver's writer, ahead of the flow run's final state. The wait is bounded
  (the writer's retry seconds plus ``FLUSH_MARGIN``): when a worker cannot reach the database,
  its records go to its journal and the flow run ends with a warning. A run's PENDING state is
  recorded by the worker that starts it, in the same write as its RUNNING state
  (``defers_pending``); the driver records it for a run that has waited ``PENDING_GRACE``
  seconds in Ray (:mod:`vivace.runners._ray_completion`), waits for upstreams or a free slot,
  or ends without starting.
- **Placement**: ``@task(runner_options={"num_cpus": .., "num_gpus": .., "memory": ..,
  "resources": {..}})`` goes to ``.options(...)``, so pending resource demand drives an
  autoscaling cluster.
- **Failures**: the exception's type, message and traceback arrive intact at ``future.result()``
  (an exception that pickles to more than about 59 KiB arrives as a VivaceError with its type,
  the start of its message and the end of its traceback: see ``_ray_worker._within_limit``).
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

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from vivace.engine.options import RAY_RUNNER_OPTIONS
from vivace.engine.remote import RemoteFailure, RemoteSetup
from vivace.engine.remote_driver import (
    RemoteFuture,
    RemoteValue,
    cancel_on_driver,
    end_on_driver,
    fail_on_driver,
)
from vivace.engine.states import (
    FINAL_TYPES,
    TIMED_OUT,
    Failed,
    describe_exception,
)
from vivace.engine.timeouts import timeout_error
from vivace.exceptions import ConfigurationError, MissingExtraError, VivaceError
from vivace.runners._ray_completion import (
    LEFT_ON_CLUSTER,
    OnDemandCompletion,
    Raised,
    RayFlight,
    RayFuture,
)
from vivace.runners._ray_payload import payload_of
from vivace.runners._ray_submit import Submitter, keep_invocation
from vivace.runners._ray_worker import (
    DONE_SMALL,
    FLUSH_IDLE,
    FLUSH_SOON,
    NOT_DONE,
    decode_value,
    run_batch,
    run_one,
)

if TYPE_CHECKING:
    from vivace.engine.task_engine import TaskCall

logger = logging.getLogger("vivace.runners.ray")

FLUSH_MARGIN = 5.0  # seconds past the writer's retry time that flush_records waits, at most
BACKSTOP_GRACE = 10.0  # seconds past a timed run's budget before the driver force-cancels it


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise MissingExtraError(
            f"RayTaskRunner needs ray, which is not installed ({error}); "
            "install it with: pip install 'vivace[ray]'"
        ) from None
    return ray


_remote_functions: dict[str, Any] = {}


def _remote(name: str) -> Any:
    """The Ray remote function (made once per process): one return for a run, two for a batch
    (its outcome and its values); no retries by Ray."""
    fn = _remote_functions.get(name)
    if fn is None:
        function: Any = run_batch if name == "batch" else run_one
        # Ray reads it when it makes the remote function (see vivace.runners._ray_submit).
        function.__ray_invocation_decorator__ = keep_invocation
        fn = _ray().remote(num_returns=2 if name == "batch" else 1, max_retries=0)(function)
        _remote_functions[name] = fn
    return fn


class RayTaskRunner(OnDemandCompletion):
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
    defers_pending = True  # a run's worker records it with RUNNING: one write instead of two

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
        # Through Ray Client the driver does not know objects' sizes (_ray_completion): every
        # run travels as a batch of one, its outcome apart from its value.
        self._client_mode = False
        self._timers: list[threading.Timer] = []
        # Runs a worker reported COMPLETED, by flow run, not yet seen final in the database.
        self._unconfirmed: dict[uuid.UUID, set[uuid.UUID]] = {}
        self._last_completed = 0.0  # time.monotonic() when the driver last learned of one
        # Per flow run: Ray's submission without its per-call preamble (_ray_submit).
        self._submitters: dict[str, Submitter] = {}

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
            self._client_mode = ray.util.client.ray.is_connected()
            self._setup = RemoteSetup()
            self._submitters = {name: Submitter(_remote(name)) for name in ("one", "batch")}
            self._start_settling()
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
            # A failed Ray Client connect leaves the process in client mode and its gRPC channel
            # open; a failed local start may leave half a node. Undo all of them.
            try:
                _close_abandoned_client_channel(error)
            except Exception as problem:
                logger.warning(
                    "could not close a failed Ray Client connect's channel: %s",
                    describe_exception(problem),
                )
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
            with self._looking:
                self._started = False
            self._setup = None
            self._submitters = {}
            self._stop_settling()
            self._let_callers_leave()
            if self._owns_ray:
                self._owns_ray = False
                ray.shutdown()

    def flush_records(self) -> None:
        """Wait until the database shows every run a worker reported COMPLETED in a final state.

        The workers write out on their own, within ``FLUSH_SOON`` seconds of a run completing
        (see :mod:`vivace.runners._ray_worker`): the first look is ``FLUSH_IDLE`` seconds after
        the last run this driver saw complete. Then it polls the database, for at most the
        writer's retry seconds plus ``FLUSH_MARGIN``, and warns.
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
        return [decode_value(value) for value in _ray().get(refs)]

    def _cancel_native(self, flights: list[RayFlight]) -> None:
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
        if self._client_mode and futures[0].item is None:
            futures[0].item = 0  # a batch of one (see __init__)
        batch = futures[0].item is not None
        kind = "batch" if batch else "one"
        options = _placement(task.runner_options)
        if options:
            fn = _remote(kind).options(**options)
        else:
            fn = self._submitters.get(kind)
            if fn is None:  # stop() has dropped them: this send raced it (Ray may be gone)
                self._give_slot()
                self._cancel_unsent(calls, futures)
                return
        payload = payload_of((setup.database_url, remote_calls if batch else remote_calls[0]))
        try:
            if batch:
                outcome, value = fn.remote(payload, *handover.remote)
            else:
                outcome = value = fn.remote(payload, *handover.remote)
        except Exception as problem:
            self._unsent(calls, futures, problem)
            return
        flight = RayFlight(outcome, value, calls, futures)
        with self._lock:
            self._in_flight[id(flight)] = flight
        watched = False
        for future in futures:  # after the flight is in flight: a waiter may settle it now
            future.handle = flight
            watched = watched or (isinstance(future, RayFuture) and future.watched)
        if watched:
            self._watch(flight)
        if calls[0].pending_deferred is not None:
            self._defer_pending(flight)
        if task.timeout_seconds is not None:
            self._arm_backstop(flight)

    def _stopping(self) -> bool:
        return not self._started

    def _arm_backstop(self, flight: RayFlight) -> None:
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

    def _backstop(self, flight: RayFlight) -> None:
        """A timed run's worker never reported back: force-cancel its Ray task (see module doc)."""
        with self._lock:
            if self._in_flight.get(id(flight)) is not flight:
                return
            flight.timed_out = True
        try:
            _ray().cancel(flight.outcome, force=True)
        except Exception as error:
            logger.warning("could not cancel a timed-out Ray task: %s", describe_exception(error))

    # -- what a Ray task's outcome means --------------------------------------------------------

    def _finished(self, flight: RayFlight, result: Any) -> None:
        if self._landed(id(flight)) is None:
            return  # the runner stopped and settled it already
        try:
            self._settle(flight, result)
        except BaseException as error:
            self._settling_failed(flight, error, "a Ray task")
        self._send_backlog()

    def _settle(self, flight: RayFlight, result: Any) -> None:
        """``result``: what fetching the Ray task's outcome gave (a batch's outcome tuple, a
        run's value or RemoteFailure, LEFT_ON_CLUSTER), or Raised(what it raised)."""
        calls, futures = flight.calls, flight.futures
        if isinstance(result, Raised):
            error = result.error
            if flight.single and _unpicklable_here(_ray(), error):
                # The run completed; its value does not unpickle in this process: it stays on
                # the cluster, and future.result() raises the reason.
                self._settle_one(flight, LEFT_ON_CLUSTER)
                return
        elif flight.single:
            self._settle_one(flight, result)
            return
        elif isinstance(result, tuple):
            kind, payload = result
            value = RemoteValue(flight.ref, self._fetch)
            self._values.add(value)  # its ref is let go when the flow run ends
            if kind == NOT_DONE:
                self._settle_partial(flight, payload, value)
                return
            self._to_confirm(calls)
            if kind == DONE_SMALL:
                value.set(payload)
            self._settle_completed(futures, value)
            return
        else:
            error = VivaceError(f"a Ray task of vivace's returned {result!r}, not an outcome")
        ray = _ray()
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

    def _settle_one(self, flight: RayFlight, result: Any) -> None:
        """A one-run Ray task returned: ``result`` is the run's value, its RemoteFailure, or
        LEFT_ON_CLUSTER (the value stays there until ``future.result()``)."""
        value = RemoteValue(flight.ref, self._fetch)
        self._values.add(value)  # its ref is let go when the flow run ends
        if type(result) is RemoteFailure:
            self._settle_partial(flight, result, value)
            return
        self._to_confirm(flight.calls)
        if result is not LEFT_ON_CLUSTER:
            value.set(decode_value(result))
        self._settle_completed(flight.futures, value)

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
            raise self._released_error()
        try:
            return decode_value(_ray().get(value.ref))
        except Exception as error:
            raise self._fetch_error(error) from error

    def __repr__(self) -> str:
        return f"RayTaskRunner(address={self.address!r})"


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


def _unpicklable_here(ray: Any, error: BaseException) -> bool:
    """Whether ``error`` is Ray failing to unpickle an object in this process (and not another
    system error: a worker that could not start, a Ray that is gone)."""
    return (
        isinstance(error, ray.exceptions.RaySystemError)
        and isinstance(error.client_exc, BaseException)
        and bool(error.traceback_str)
    )


def _close_abandoned_client_channel(error: BaseException) -> None:
    """Close the gRPC channel of a Ray Client connect that gave up.

    Ray's client ``Worker`` raises from its constructor when the server does not answer in time,
    before anything holds it, and leaves its channel open: subscribed to connectivity changes and
    reconnecting in the background for the rest of the process. That ``Worker`` is ``self`` in a
    frame of the error's traceback.
    """
    from ray.util.client.worker import Worker

    trace = error.__traceback__
    while trace is not None:
        worker = trace.tb_frame.f_locals.get("self")
        if isinstance(worker, Worker) and worker.channel is not None:
            channel, worker.channel = worker.channel, None
            channel.unsubscribe(worker._on_channel_state_change)
            channel.close()
            return
        trace = trace.tb_next


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
