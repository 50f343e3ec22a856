"""Runs submitted tasks on a Dask cluster: a temporary LocalCluster, or a long-lived one.

Each task run is one cluster task (``client.submit``; ``task.map(batch_size=K)`` makes one cluster
task of K runs). On the worker it runs through vivace's own state machine
(:mod:`vivace.engine.remote`): retries happen there, and the worker process writes states and logs
straight to the database through its own batched writer, configured from the flow's settings,
which travel with the task. Before the flow run records its final state, every worker flushes
what it has buffered (:meth:`DaskTaskRunner.flush_records`). What does not depend on Dask
(dispatch, in-flight slots, cancellation, held results) lives in :mod:`vivace.runners.cluster`.

- **Dependencies** ride Dask's own futures: a future passed to a downstream task (also inside
  lists, tuples, sets and dicts) is handed to ``client.submit`` as its ``distributed.Future``, so
  Dask orders the runs and moves the data worker to worker. The driver learns that a run completed
  from the result's type, which the scheduler reports without the value, and fetches the value only
  on ``future.result()``; ``future.state`` never fetches anything. A small value (a number, a
  boolean, None, a string up to 1,024 characters) rides back to the driver with its run's
  completion instead, as a Dask event (:mod:`vivace.runners._dask_worker`), so a ``result()``
  that waited for its run costs no gather; this needs a client vivace made itself, so with a
  ``distributed.Client`` given as ``address`` every value is fetched.
- **Failures**: the exception's type, message and traceback arrive intact at ``future.result()``. A
  run whose worker dies ends CRASHED, and is submitted again if it has retries left. On the
  temporary cluster vivace starts, the scheduler's ``allowed-failures`` is 0, so Dask itself does
  not re-run a task whose worker died; a long-lived cluster follows its own setting (Dask's default
  re-runs such a task up to 3 times before vivace sees the crash).
- **Timeouts**: the worker's engine ends the run FAILED [TimedOut] at the deadline and the cluster
  task returns at once, freeing its worker thread. What keeps running: Python cannot kill a
  thread, so the task's function goes on in a helper thread of the worker process until its next
  Python bytecode (pure Python stops promptly; a call blocked in C, such as ``time.sleep`` or a
  socket read, runs to its end, using the worker's CPU or memory but no task slot).
- **Cleanup**: a flow run that fails or is interrupted cancels its outstanding cluster tasks and
  records them CANCELLED (a run already executing on a worker runs to its end there, but its
  recorded state stays CANCELLED). A temporary cluster is always closed. A long-lived cluster is
  never shut down and keeps nothing from the flow run: when the flow run ends, results still held
  by the caller's futures are fetched, and every cluster future is released.
- **Backpressure**: at most ``max_in_flight`` cluster tasks are submitted and unfinished at a time;
  ``.submit()`` waits for room, so mapping over 100,000 items bounds both the driver's memory and
  the scheduler's.

Example::

    @flow(task_runner=DaskTaskRunner(address="tcp://10.0.0.5:8786"))
    def pipeline(): ...
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from vivace.engine.options import DASK_RUNNER_OPTIONS
from vivace.engine.remote import (
    PartialBatch,
    RemoteFailure,
    RemoteSetup,
    flush_process_records,
    run_remote,
    run_remote_batch,
)
from vivace.engine.remote_driver import (
    RemoteFuture,
    RemoteValue,
    cancel_on_driver,
    end_on_driver,
    fail_on_driver,
)
from vivace.engine.states import Crashed, describe_exception
from vivace.exceptions import (
    ConfigurationError,
    CrashedRunError,
    MissingExtraError,
    VivaceError,
)
from vivace.runners._dask_worker import TOPIC_PREFIX, VALUE_EVENT, drop_topic, run_riding
from vivace.runners.cluster import ClusterTaskRunner, Flight

if TYPE_CHECKING:
    from vivace.engine.task_engine import TaskCall

logger = logging.getLogger("vivace.runners.dask")

FLUSH_TIMEOUT = 30.0  # seconds each worker may take to write out its buffered records
MAX_RESENDS = 3  # times a run is sent again because an upstream's cluster task was lost
READ_AHEAD = 256  # small results fetched in the same round trip as the one asked for
READ_AHEAD_WINDOW = 65_536  # completed small results remembered for read-ahead, at most
# Result types that are always small: fetching them ahead costs no memory worth counting.
SMALL_TYPES = frozenset({int, float, complex, bool, type(None)})

_local = threading.local()  # in_callback: this thread settles finished cluster tasks


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise MissingExtraError(
            f"DaskTaskRunner needs dask and distributed, which are not installed ({error}); "
            "install them with: pip install 'vivace[dask]'"
        ) from None
    return distributed


class DaskTaskRunner(ClusterTaskRunner["_Flight"]):
    """Task runs on a Dask cluster (see the module documentation for what happens where).

    - no ``address``: a temporary cluster for each flow run, closed at its end:
      ``cluster_class(**cluster_kwargs)`` (default ``distributed.LocalCluster``, worker
      processes); ``cluster_class`` may be a class or an import path such as
      ``"dask_jobqueue.SLURMCluster"``; ``adapt_kwargs`` (``{"minimum": 0, "maximum": 4}``) makes
      it adaptive through the cluster's own ``adapt()``.
    - ``address``: a scheduler address (``"tcp://10.0.0.5:8786"``), a ``distributed.Client`` or a
      cluster object: a long-lived cluster, used and left running.
    - ``client_kwargs`` go to ``distributed.Client`` (``security=`` for TLS, ``timeout=``, ...).
    - ``max_in_flight``: cluster tasks submitted and unfinished at once, at most.
    """

    _engine = "Dask"
    _logger = logger

    def __init__(
        self,
        address: Any = None,
        cluster_class: Any = None,
        cluster_kwargs: dict[str, Any] | None = None,
        adapt_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        max_in_flight: int = 10_000,
    ) -> None:
        distributed = _distributed()
        if address is not None and (
            cluster_class is not None or cluster_kwargs is not None or adapt_kwargs is not None
        ):
            raise ConfigurationError(
                "DaskTaskRunner: address connects to a running cluster, which vivace leaves as it "
                "is; cluster_class, cluster_kwargs and adapt_kwargs describe the temporary cluster "
                "vivace starts when no address is given. Give one or the other"
            )
        if address is not None and not (
            isinstance(address, (str, distributed.Client)) or hasattr(address, "scheduler_address")
        ):
            raise ConfigurationError(
                "DaskTaskRunner: address must be a scheduler address such as "
                f"'tcp://10.0.0.5:8786', a distributed.Client or a cluster object, got {address!r}"
            )
        for option, value in (
            ("cluster_kwargs", cluster_kwargs),
            ("adapt_kwargs", adapt_kwargs),
            ("client_kwargs", client_kwargs),
        ):
            if value is not None and not isinstance(value, dict):
                raise ConfigurationError(
                    f"DaskTaskRunner: {option} must be a dict of keyword arguments, got {value!r}"
                )
        super().__init__(max_in_flight)
        self.address = address
        self.cluster_class = _cluster_class(cluster_class)
        self.cluster_kwargs = cluster_kwargs
        self.adapt_kwargs = adapt_kwargs
        self.client_kwargs = client_kwargs
        self._client: Any = None
        self._cluster: Any = None  # the temporary cluster, closed by stop()
        self._owns_client = False
        # Small results not fetched yet, in the order they completed (read-ahead candidates).
        self._small: collections.deque[weakref.ref[RemoteValue]] = collections.deque(
            maxlen=READ_AHEAD_WINDOW
        )
        self._resends: dict[Any, int] = {}
        self._sent = 0
        self._closing = False  # stop() has begun: nothing more is sent
        self._topic: str | None = None  # where small values ride back (see _dask_worker)
        self._arrived: dict[str, Any] = {}  # values that rode back, by cluster task, not settled

    def duplicate(self) -> DaskTaskRunner:
        return DaskTaskRunner(
            self.address,
            self.cluster_class,
            self.cluster_kwargs,
            self.adapt_kwargs,
            self.client_kwargs,
            self.max_in_flight,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` of the started runner (None before start, after stop)."""
        return self._client

    def start(self) -> None:
        if self._client is not None:
            return
        distributed = _distributed()
        client_kwargs = self.client_kwargs or {}
        if isinstance(self.address, distributed.Client):
            client, owns = self.address, False
        elif self.address is not None:
            client, owns = _connect(distributed, self.address, client_kwargs), True
        else:
            cluster = self._start_cluster()
            try:
                if self.adapt_kwargs is not None:
                    cluster.adapt(**self.adapt_kwargs)
                client, owns = _connect(distributed, cluster, client_kwargs), True
            except BaseException:
                cluster.close()
                raise
            self._cluster = cluster
        self._setup = RemoteSetup()
        self._closing = False
        self._client, self._owns_client = client, owns
        if owns:  # a client of the caller's would keep the handler (see _dask_worker)
            self._topic = f"{TOPIC_PREFIX}{uuid.uuid4().hex}"
            client.subscribe_topic(self._topic, self._value_arrived)

    def _start_cluster(self) -> Any:
        import dask

        cluster_class = self.cluster_class
        if cluster_class is None:
            cluster_class = _distributed().LocalCluster
        # vivace decides what a dead worker means for a run (CRASHED, retried if it has retries):
        # a scheduler started here does not re-run the task by itself.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            return cluster_class(**(self.cluster_kwargs or {}))

    def stop(self, wait: bool = True) -> None:
        client = self._client
        if client is None:
            return
        try:
            self._wind_down(
                wait,
                "the flow run ended first; its task was cancelled on the Dask cluster (a run "
                "already executing on a worker runs to its end there)",
            )
            self._small.clear()
            self._resends.clear()
        finally:
            self._arrived.clear()
            topic, self._topic = self._topic, None
            self._client = None
            self._setup = None
            cluster, self._cluster = self._cluster, None
            try:
                if topic is not None and cluster is None:  # a temporary cluster takes it along
                    self._drop_topic(client, topic)
            finally:
                try:
                    if self._owns_client:
                        client.close()
                finally:
                    if cluster is not None:
                        cluster.close()

    @staticmethod
    def _drop_topic(client: Any, topic: str) -> None:
        """Have the long-lived scheduler forget the flow run's value topic and its events."""
        try:
            dropped = client.run_on_scheduler(drop_topic, topic)
        except OSError as error:  # the scheduler is gone, and its topics with it
            logger.debug("could not drop topic %r: %s", topic, describe_exception(error))
            return
        except Exception as error:
            dropped = describe_exception(error)
        if dropped is not True:
            logger.warning(
                "the Dask scheduler keeps the last events of topic %r (small task results, at "
                "most distributed.admin.low-level-log-length of them): dropping it failed: %s",
                topic,
                dropped,
            )

    def flush_records(self) -> None:
        """Have every worker write out the records it buffered for this flow run's database."""
        client, setup = self._client, self._setup
        if client is None or setup is None or not self._sent:
            return
        results = client.run(
            _flush_worker_records,
            setup.database_url,
            FLUSH_TIMEOUT,
            on_error="return",
            callback_timeout=FLUSH_TIMEOUT + 10,
        )
        problems = {worker: result for worker, result in results.items() if result is not True}
        if problems:
            logger.warning("some workers did not flush their task records: %s", problems)

    def _gather(self, refs: list[Any]) -> list[Any]:
        return list(self._client.gather(refs))

    def _stop_sending(self) -> None:
        self._closing = True

    def _cancel_native(self, flights: list[_Flight]) -> None:
        if self._client is not None:
            try:
                self._client.cancel([flight.ref for flight in flights])
            except Exception as error:
                logger.warning("could not cancel cluster tasks: %s", describe_exception(error))

    # -- submitting ------------------------------------------------------------------------------

    def _check_started(self) -> None:
        if self._client is None:
            raise RuntimeError("DaskTaskRunner: submit() called before start() or after stop()")

    def _send(self, calls: list[TaskCall], futures: list[RemoteFuture]) -> None:
        client, setup = self._client, self._setup
        if client is None or setup is None or self._closing:  # the flow run ended meanwhile
            self._cancel_unsent(calls, futures)
            return
        prepared = self._prepare(setup, calls, futures)
        if prepared is None or not self._slot_or_backlog(calls, futures):
            return
        handover, remote_calls = prepared
        if self._closing:  # stop() began while this waited for room
            self._give_slot()
            self._cancel_unsent(calls, futures)
            return
        task = calls[0].task
        batch = futures[0].item is not None
        options = _placement(task.runner_options)
        first = calls[0].run
        # Unique per sending: a run sent again (after its worker died) gets a new key.
        key = f"{task.name}-{'batch-' if batch else ''}{first.id.hex}-{first.state_seq}"
        try:
            if batch:
                remote = client.submit(
                    run_remote_batch,
                    remote_calls,
                    *handover.remote,
                    key=key,
                    pure=False,
                    **options,
                )
            elif self._topic is not None:
                remote = client.submit(
                    run_riding,
                    self._topic,
                    remote_calls[0],
                    *handover.remote,
                    key=key,
                    pure=False,
                    **options,
                )
            else:
                remote = client.submit(
                    run_remote,
                    remote_calls[0],
                    *handover.remote,
                    key=key,
                    pure=False,
                    **options,
                )
        except Exception as problem:
            self._unsent(calls, futures, problem)
            return
        flight = _Flight(remote, calls, futures, handover.remote)
        for future in futures:
            future.handle = flight
        with self._room:
            closing = self._closing
            if closing:
                self._taken -= 1
                self._room.notify_all()
            else:
                self._in_flight[remote.key] = flight
                self._sent += 1
        if closing:  # stop() began while this was being sent
            remote.cancel()
            self._cancel_unsent(calls, futures)
            return
        remote.add_done_callback(self._finished)

    def _stopping(self) -> bool:
        return self._closing

    def _on_settling_thread(self) -> bool:
        return bool(getattr(_local, "in_callback", False))

    # -- settling --------------------------------------------------------------------------------

    def _finished(self, remote: Any) -> None:
        """A cluster task ended (on Dask's callback thread): settle its runs' futures."""
        flight = self._landed(remote.key)
        if flight is None:
            return  # the runner stopped and settled it already
        _local.in_callback = True
        try:
            self._settle(flight)
        except BaseException as error:
            self._settling_failed(flight, error, f"cluster task {remote.key}")
        finally:
            _local.in_callback = False
        self._send_backlog()

    def _settle(self, flight: _Flight) -> None:
        remote, calls, futures = flight.ref, flight.calls, flight.futures
        status = remote.status
        if status in ("finished", "lost"):
            kind = remote.type
            if kind is RemoteFailure or kind is PartialBatch:
                # Some run did not complete: fetch the (small) outcome to learn which and why.
                self._settle_partial(flight, remote.result(), RemoteValue(remote, self._fetch))
                return
            value = RemoteValue(remote, self._fetch)
            self._values.add(value)
            arrived = self._arrived.pop(remote.key, _MISSING)
            # A value of another type came from an earlier attempt of this cluster task (its
            # worker died before reporting the end; Dask ran it again): fetch this one's.
            if arrived is not _MISSING and type(arrived) is kind:
                value.set(arrived)
            elif kind in SMALL_TYPES or kind is None:
                self._small.append(weakref.ref(value))
            self._settle_completed(futures, value)
            return
        if status == "error":
            error = remote.exception()
            if any(up.status != "finished" for up in flight.upstreams):
                # An upstream's cluster task was lost (its worker died): send these again once
                # the upstream is settled (retried, or ended).
                for call, future in zip(calls, futures, strict=True):
                    self._send_again(call, future)
                return
            if _is_killed_worker(error):
                for call, future in zip(calls, futures, strict=True):
                    self._worker_died(call, future, str(error))
                return
            for call, future in zip(calls, futures, strict=True):
                future.handle = None
                future.set_final_state(fail_on_driver(call, error))
            return
        for call, future in zip(calls, futures, strict=True):  # cancelled from outside
            future.handle = None
            future.set_final_state(cancel_on_driver(call, "cancelled on the Dask cluster"))

    def _value_arrived(self, event: tuple[float, Any]) -> None:
        """A small value rode back ahead of its run's completion (on the client's event loop)."""
        message = event[1]
        if type(message) is tuple and len(message) == 3 and message[0] == VALUE_EVENT:
            self._arrived[message[1]] = message[2]

    def _fetch(self, value: RemoteValue) -> Any:
        """Fetch ``value``, with up to READ_AHEAD small results that completed after it.

        Asking the futures of a map for their results one by one then costs one round trip per
        READ_AHEAD results instead of one each. Only small results (numbers, None) are fetched
        ahead, so no large value reaches the driver unless it is asked for.
        """
        if value.ref is None:
            raise self._released_error()
        batch = [value]
        client = self._client
        if client is not None:
            with self._lock:
                small = self._small
                while small and len(batch) < READ_AHEAD:
                    other = small.popleft()()
                    if (
                        other is not None
                        and other is not value
                        and other.ref is not None
                        and not other.fetched()
                    ):
                        batch.append(other)
        try:
            if len(batch) == 1:
                return value.ref.result()
            results = client.gather([v.ref for v in batch])
        except Exception as error:
            raise self._fetch_error(error) from error
        for other, result in zip(batch[1:], results[1:], strict=True):
            other.set(result)
        return results[0]

    def _send_again(self, call: TaskCall, future: RemoteFuture) -> None:
        count = self._resends[call.run.id] = self._resends.get(call.run.id, 0) + 1
        future.handle = None
        if count > MAX_RESENDS:
            self._resends.pop(call.run.id, None)
            reason = f"its upstreams were lost on the Dask cluster {MAX_RESENDS} times"
            crashed = Crashed(CrashedRunError(reason), f"the task run crashed: {reason}")
            future.set_final_state(end_on_driver(call, crashed))
            return
        future.item = None
        self._dispatch([call], [future], settled_only=True)

    def __repr__(self) -> str:
        if self.address is not None:
            where = f"address={self.address!r}"
        else:
            name = getattr(self.cluster_class, "__name__", "LocalCluster")
            where = f"cluster_class={name}"
        return f"DaskTaskRunner({where})"


class _Flight(Flight):
    """One cluster task in flight (``ref``: its ``distributed.Future``), and the cluster futures
    of the upstreams it waits on."""

    __slots__ = ("upstreams",)

    def __init__(
        self,
        remote: Any,
        calls: list[TaskCall],
        futures: list[RemoteFuture],
        upstreams: list[Any],
    ) -> None:
        super().__init__(remote, calls, futures)
        self.upstreams = upstreams


_NO_OPTIONS: dict[str, Any] = {}
_MISSING = object()


def _connect(distributed: Any, address: Any, client_kwargs: dict[str, Any]) -> Any:
    """``distributed.Client(address)``; a connect that fails names the address, and leaves no
    thread behind."""
    try:
        return distributed.Client(address, **client_kwargs)
    except Exception as error:
        _stop_abandoned_client_loop(distributed, error)
        if not isinstance(error, OSError):  # not the connect: bad client_kwargs, say
            raise
        where = address if isinstance(address, str) else type(address).__name__
        raise VivaceError(
            f"DaskTaskRunner could not connect to the Dask scheduler at {where!r}: "
            f"{describe_exception(error)}"
        ) from error


def _stop_abandoned_client_loop(distributed: Any, error: BaseException) -> None:
    """Stop the event-loop thread of a ``distributed.Client`` whose constructor failed.

    The client starts a thread for its event loop before it connects, and a failed connect
    leaves it running with nothing holding the client: a process that retries an unreachable
    scheduler would gain a thread each time. The client is ``self`` in a frame of the error's
    traceback.
    """
    trace = error.__traceback__
    while trace is not None:
        client = trace.tb_frame.f_locals.get("self")
        if isinstance(client, distributed.Client):
            loop_runner = getattr(client, "_loop_runner", None)
            if loop_runner is not None:
                try:
                    loop_runner.stop()
                except Exception as problem:
                    logger.warning(
                        "could not stop a failed Dask client's event loop: %s",
                        describe_exception(problem),
                    )
            return
        trace = trace.tb_next


def _placement(options: dict[str, Any] | None) -> dict[str, Any]:
    """The task's runner_options that ``client.submit`` takes (Ray's are ignored here)."""
    if not options:
        return _NO_OPTIONS
    return {key: options[key] for key in DASK_RUNNER_OPTIONS if key in options}


def _is_killed_worker(error: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)


def _cluster_class(value: Any) -> Any:
    """``cluster_class`` as a class: given as one, or as an import path ("pkg.module.Class")."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(
            f"DaskTaskRunner: cluster_class must be a cluster class or its import path such as "
            f"'dask_jobqueue.SLURMCluster', got {value!r}"
        )
    module_name, _, name = value.replace(":", ".").rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError) as error:
        raise ConfigurationError(
            f"DaskTaskRunner: cannot import cluster_class {value!r}: {describe_exception(error)}"
        ) from None
    if not callable(found):
        raise ConfigurationError(
            f"DaskTaskRunner: cluster_class {value!r} is not a class (got {found!r})"
        )
    return found


async def _flush_worker_records(database_url: str, timeout: float) -> bool:
    """Run on every worker by ``flush_records``: write out its buffered records."""
    return await asyncio.to_thread(flush_process_records, database_url, timeout)
