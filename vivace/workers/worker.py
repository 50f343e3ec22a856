"""The worker: claims due runs of its work queues from the server, starts them, watches them.

One loop, one thread, stepping every ``WATCH_SECONDS`` (0.2 s):

- every ``poll_interval`` seconds, claim up to ``limit`` minus the runs it holds (launched, or
  claimed and waiting for their start time) through ``POST /api/workers/{id}/claim``: the server
  hands out each due run to exactly one worker, those due within ``prefetch_seconds`` included;
- launch each claimed run when its expected start time comes: rebuild the infrastructure its
  deployment version names (``infrastructure_from_record``) and ``start`` it with the base
  environment (below); report what was launched (a pid, a container id). An infrastructure that
  cannot be built or started ends the run CRASHED saying why;
- watch every launched run (``poll``: a local process at every step, remote infrastructure such
  as a container or a Kubernetes job every ``poll_interval`` seconds, not to hammer its API);
  when one exits, report it: a run its engine left without a final state ends CRASHED with the
  exit code in its message (CANCELLED if it was being cancelled). A report the server answers
  404 is final: the worker registers again if the server forgot it (under the same id, so its
  runs stay its own) and reports once more; otherwise the run is no longer its own, and it
  drops it;
- every ``heartbeat_interval`` seconds, heartbeat: the answer lists its runs now CANCELLING,
  whose infrastructure it stops (SIGTERM, then SIGKILL after ``grace_seconds``, off the loop);
  such a run it has not launched yet it gives back (``release``), which ends it CANCELLED.

What every run's engine gets in its environment: ``VIVACE_DATABASE_URL`` (where it records the
run: the worker's own database URL, or the one it was given), ``VIVACE_HEARTBEAT_INTERVAL``,
``VIVACE_API_URL`` and ``VIVACE_WORKER_ID``; the infrastructure's own ``env`` goes over it.

``run()`` loops until ``stop()`` (SIGINT or SIGTERM when run from the main thread): it then claims
nothing more, gives back the runs it claimed and did not launch, stops those it launched and
reports their exits, and deregisters. ``run_once()`` claims once, runs what it got to the end and
returns (``vivace worker start --run-once``, and tests). An unreachable server is logged and
tried again on the next step: the runs already launched go on meanwhile. An unexpected error
(a bug in an infrastructure's code, say) is logged with its traceback: one that starting a run
raises ends that run CRASHED; the loop itself goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from vivace.exceptions import ConfigurationError, VivaceError
from vivace.infrastructure.base import INFRASTRUCTURE_TYPES, Launched
from vivace.infrastructure.process import LaunchedProcess
from vivace.workers.api import ClaimedRun, WorkerAPI

logger = logging.getLogger("vivace.workers")

WATCH_SECONDS = 0.2
DEFAULT_POLL_INTERVAL = 2.0
DEFAULT_GRACE_SECONDS = 10.0
_NOT_EXITED: Any = object()


@dataclasses.dataclass
class _Launch:
    run: ClaimedRun
    launched: Launched
    exit_code: Any = _NOT_EXITED  # once known, until the server has been told
    stopping: bool = False
    next_poll: float = 0.0  # monotonic time of the next poll (remote infrastructure)
    failing: bool = False  # its poll raised an unexpected error (logged once)

    @property
    def local(self) -> bool:
        """A local process: polling it costs a system call, so it is polled at every step."""
        return isinstance(self.launched, LaunchedProcess)


class Worker:
    """A worker of ``queues`` that starts runs on ``worker_type`` infrastructure; see the module.

    ::

        Worker("http://127.0.0.1:4200/api", queues=["default"], limit=4).run()
    """

    def __init__(
        self,
        api_url: str,
        api_key: str | None = None,
        queues: Sequence[str] = ("default",),
        limit: int = 4,
        worker_type: str = "process",
        name: str | None = None,
        prefetch_seconds: float = 10.0,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        heartbeat_interval: float | None = None,
        database_url: str | None = None,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        from vivace.settings import get_settings

        settings = get_settings()
        if not queues or any(not isinstance(q, str) or not q.strip() for q in queues):
            raise ConfigurationError(
                f"worker queues {list(queues)!r} are not valid; expected one or more queue names"
            )
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigurationError(f"worker limit {limit!r} is not valid; expected 1 or more")
        if worker_type not in INFRASTRUCTURE_TYPES:
            raise ConfigurationError(
                f"worker type {worker_type!r} is not known; expected one of "
                + ", ".join(INFRASTRUCTURE_TYPES)
            )
        for option, value in (
            ("prefetch_seconds", prefetch_seconds),
            ("poll_interval", poll_interval),
            ("grace_seconds", grace_seconds),
        ):
            if value < 0:
                raise ConfigurationError(f"worker {option} {value!r} is negative")
        self.api = WorkerAPI(api_url, api_key=api_key)
        self.queues = list(dict.fromkeys(queues))
        self.limit = limit
        self.worker_type = worker_type
        self.name = name or f"{worker_type}-worker-{socket.gethostname()}-{os.getpid()}"
        self.prefetch_seconds = prefetch_seconds
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval or settings.heartbeat_interval
        self.database_url = database_url or settings.resolved_database_url
        self.grace_seconds = grace_seconds
        self.worker_id: uuid.UUID | None = None
        self._waiting: list[ClaimedRun] = []  # claimed, not launched yet (by start time)
        self._launched: dict[uuid.UUID, _Launch] = {}
        self._stop = threading.Event()
        self._next_poll = 0.0
        self._next_heartbeat = 0.0

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> None:
        """Claim, launch and watch runs until ``stop()``, then wind down (see the module)."""
        previous = self._install_signal_handlers()
        try:
            self._register()
            while not self._stop.is_set():
                try:
                    self._step(claim=True)
                except Exception:
                    logger.exception("Worker %r: unexpected error; going on", self.name)
                self._stop.wait(WATCH_SECONDS)
        finally:
            try:
                self._wind_down()
            finally:
                self._restore_signal_handlers(previous)

    def run_once(self) -> list[uuid.UUID]:
        """Claim once, launch what was claimed at its start time, watch it to the end; return
        the ids of the runs it launched or tried to."""
        previous = self._install_signal_handlers()
        handled: list[uuid.UUID] = []
        try:
            self._register()
            claimed = self._claim()
            handled = [run.id for run in claimed]
            while (self._waiting or self._launched) and not self._stop.is_set():
                try:
                    self._step(claim=False)
                except Exception:
                    logger.exception("Worker %r: unexpected error; going on", self.name)
                if self._waiting or self._launched:
                    self._stop.wait(WATCH_SECONDS)
        finally:
            try:
                self._wind_down()
            finally:
                self._restore_signal_handlers(previous)
        return handled

    def stop(self) -> None:
        """Ask ``run()`` to wind down (from any thread, or a signal handler)."""
        self._stop.set()

    @property
    def base_environment(self) -> dict[str, str]:
        """What every run's engine gets in its environment (the infrastructure's env over it)."""
        env = {
            "VIVACE_DATABASE_URL": self.database_url,
            "VIVACE_HEARTBEAT_INTERVAL": f"{self.heartbeat_interval:g}",
            "VIVACE_API_URL": self.api.api_url,
        }
        if self.worker_id is not None:
            from vivace.deployments.execute import WORKER_ID_VARIABLE

            env[WORKER_ID_VARIABLE] = str(self.worker_id)
        return env

    def _step(self, claim: bool) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval
            self._heartbeat()
        if claim and now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            self._claim()
        self._launch_due()
        self._watch(now)

    # -- the steps ---------------------------------------------------------------------------------

    def _register(self) -> None:
        """Register (again, under the same id, when the server forgot this worker)."""
        self.worker_id = self.api.register(
            self.name, self.worker_type, self.queues, worker_id=self.worker_id
        )
        logger.info(
            "Worker %r (%s) registered: queues %s, up to %d runs at a time, id %s",
            self.name,
            self.worker_type,
            ", ".join(self.queues),
            self.limit,
            self.worker_id,
        )

    def _claim(self) -> list[ClaimedRun]:
        room = self.limit - len(self._waiting) - len(self._launched)
        if room <= 0 or self.worker_id is None:
            return []
        try:
            claimed = self.api.claim(self.worker_id, room, self.prefetch_seconds)
        except VivaceError as error:
            logger.warning("Worker %r cannot claim runs now: %s", self.name, error)
            return []
        for run in claimed:
            logger.info(
                "Claimed flow run %r (%s) of flow %r from queue %r",
                run.name,
                run.id,
                run.flow_name,
                run.work_queue_name,
            )
        self._waiting.extend(claimed)
        self._waiting.sort(key=lambda run: run.start_at)
        return claimed

    def _launch_due(self) -> None:
        now = time.time()
        while self._waiting and self._waiting[0].start_at <= now and not self._stop.is_set():
            self._launch(self._waiting.pop(0))

    def _launch(self, run: ClaimedRun) -> None:
        from pydantic import ValidationError

        from vivace.infrastructure.base import infrastructure_from_record

        assert self.worker_id is not None
        try:
            infrastructure = infrastructure_from_record(run.infrastructure)
            launched = infrastructure.start(run.id, self.base_environment)
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if isinstance(error, (VivaceError, ValidationError)):
                logger.error("Flow run %r (%s) could not be started: %s", run.name, run.id, message)
            else:  # a bug in the infrastructure's code: say where
                logger.exception("Flow run %r (%s) could not be started", run.name, run.id)
            try:
                self.api.start_failed(self.worker_id, run.id, message)
            except VivaceError as problem:
                logger.warning("Cannot report that flow run %s did not start: %s", run.id, problem)
            return
        self._launched[run.id] = _Launch(run, launched)
        logger.info("Launched flow run %r (%s) in %s", run.name, run.id, launched.description)
        try:
            self.api.launched(self.worker_id, run.id, launched.identifier)
        except VivaceError as error:
            logger.warning("Cannot record what was launched for flow run %s: %s", run.id, error)

    def _watch(self, now: float | None = None) -> None:
        """Poll what was launched (a remote one every ``poll_interval``); report the exits."""
        now = time.monotonic() if now is None else now
        for run_id, launch in list(self._launched.items()):
            if launch.exit_code is _NOT_EXITED:
                if not launch.local:
                    if now < launch.next_poll:
                        continue
                    launch.next_poll = now + self.poll_interval
                try:
                    code = launch.launched.poll()
                except VivaceError as error:
                    logger.warning("Cannot watch %s now: %s", launch.launched.description, error)
                    continue
                except Exception:
                    if not launch.failing:
                        launch.failing = True
                        logger.exception(
                            "Cannot watch %s (flow run %s); trying again",
                            launch.launched.description,
                            run_id,
                        )
                    continue
                launch.failing = False
                if code is None:
                    continue
                launch.exit_code = code
            if self._report_exit(launch):
                del self._launched[run_id]

    def _report_exit(self, launch: _Launch) -> bool:
        """Tell the server the run's infrastructure exited; False to try again later."""
        assert self.worker_id is not None
        run, description = launch.run, launch.launched.description
        try:
            after = self.api.exited(self.worker_id, run.id, launch.exit_code, description)
        except VivaceError as error:
            logger.warning("Cannot report that flow run %s exited: %s", run.id, error)
            return False
        if after is None:  # 404
            try:
                forgotten = self.api.heartbeat(self.worker_id) is None
            except VivaceError as error:
                logger.warning("Cannot report that flow run %s exited: %s", run.id, error)
                return False
            if forgotten and self._register_again():
                return False  # known again, under the same id: report at the next step
            logger.warning(
                "Flow run %r (%s) exited (%s, code %s), but the server no longer knows it as a "
                "run of worker %r; not reporting it",
                run.name,
                run.id,
                description,
                launch.exit_code,
                self.name,
            )
            return True
        logger.info(
            "Flow run %r (%s) exited: %s exited with code %s; the run is %s",
            run.name,
            run.id,
            description,
            launch.exit_code,
            after.state_name,
        )
        return True

    def _register_again(self) -> bool:
        logger.warning("Worker %r was forgotten by the server: registering again", self.name)
        try:
            self._register()
        except VivaceError as error:
            logger.warning("Worker %r cannot register again now: %s", self.name, error)
            return False
        return True

    def _heartbeat(self) -> None:
        if self.worker_id is None:
            return
        try:
            cancelling = self.api.heartbeat(self.worker_id)
        except VivaceError as error:
            logger.warning("Worker %r cannot heartbeat now: %s", self.name, error)
            return
        if cancelling is None:
            self._register_again()
            return
        for run_id in cancelling:
            launch = self._launched.get(run_id)
            if launch is None:
                self._give_back_cancelled(run_id)
            elif not launch.stopping:
                logger.info(
                    "Flow run %r (%s) is being cancelled: stopping %s",
                    launch.run.name,
                    run_id,
                    launch.launched.description,
                )
                self._stop_infrastructure(launch)

    def _give_back_cancelled(self, run_id: uuid.UUID) -> None:
        """A run being cancelled that the worker has not launched: never launch it, and give it
        back, which ends it CANCELLED (tried again at the next heartbeat if that fails)."""
        assert self.worker_id is not None
        self._waiting = [run for run in self._waiting if run.id != run_id]
        try:
            self.api.release(self.worker_id, run_id)
        except VivaceError as error:
            logger.warning("Cannot give back flow run %s, being cancelled: %s", run_id, error)
            return
        logger.info("Flow run %s was cancelled before it was launched", run_id)

    def _stop_infrastructure(self, launch: _Launch) -> threading.Thread:
        """Stop it off the loop (a stop waits up to ``grace_seconds``)."""
        launch.stopping = True

        def stop() -> None:
            try:
                launch.launched.stop(self.grace_seconds)
            except VivaceError as error:
                logger.warning("Cannot stop %s: %s", launch.launched.description, error)
            except Exception:
                logger.exception("Cannot stop %s", launch.launched.description)

        thread = threading.Thread(target=stop, name="vivace-worker-stop", daemon=True)
        thread.start()
        return thread

    def _wind_down(self) -> None:
        """Give back what was not launched, stop what was, report the exits, deregister."""
        if self.worker_id is None:
            return
        for run in self._waiting:
            try:
                self.api.release(self.worker_id, run.id)
                logger.info("Gave back flow run %r (%s), not launched", run.name, run.id)
            except VivaceError as error:
                logger.warning("Cannot give back flow run %s: %s", run.id, error)
        self._waiting.clear()
        if self._launched:
            logger.info("Worker %r stopping: stopping %d runs", self.name, len(self._launched))
            stopping = [
                self._stop_infrastructure(launch)
                for launch in self._launched.values()
                if not launch.stopping and launch.exit_code is _NOT_EXITED
            ]
            for thread in stopping:
                thread.join()
            deadline = time.monotonic() + self.grace_seconds + 5
            while self._launched and time.monotonic() < deadline:
                try:
                    self._watch()
                except Exception:
                    logger.exception("Worker %r: unexpected error while stopping", self.name)
                if self._launched:
                    time.sleep(WATCH_SECONDS)
        try:
            self.api.deregister(self.worker_id)
        except VivaceError as error:
            logger.warning("Worker %r cannot deregister: %s", self.name, error)
        logger.info("Worker %r stopped", self.name)
        self.worker_id = None

    # -- signals -----------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handle(signum: int, frame: Any) -> None:
            self.stop()  # nothing more here: a handler must not take the logging lock

        return {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any] | None) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)
