"""Running one flow run of a deployment in this process: what ``python -m vivace.engine <id>`` does.

A worker launches that command on some infrastructure for each run it claimed; it can also be
run by hand (a SCHEDULED run is then claimed by this process). In order:

1. read the run (an unknown id is exit code 2); a run being cancelled ends CANCELLED without
   running, a run that already ended is left as it is;
2. take it: in one transaction, a SCHEDULED run is claimed (PENDING ``Claimed``, as a worker
   would) and the run's heartbeat is set, both or neither. Only a run no engine has taken yet
   (no heartbeat) and that no worker, or this process's own worker (``VIVACE_WORKER_ID``),
   claimed can be taken, so two engines never run one flow run, whoever started them;
3. read the deployment *version* the run was created from, fetch its code into a fresh temporary
   folder (removed afterwards), put that folder first on ``sys.path`` and make it the working
   directory, and import the flow from the deployment's entrypoint, beating meanwhile (a taken
   run whose heartbeat stops is ended CRASHED by the ``zombies`` service, so an engine that
   dies here does not leave it PENDING for good);
4. run it with the run's recorded parameters into the existing row (the engine's ``deployed``
   mode: PENDING ``Claimed`` ─► RUNNING ─► final, with a heartbeat and cancellation).

A failure before the flow can start (the deployment version is gone, the code cannot be fetched,
the entrypoint cannot be imported) ends the run FAILED with a message naming the cause; one the
engine finds (parameters that no longer bind) does too. A SIGTERM (or Ctrl-C) before the engine
recorded anything (fetching the code, importing the flow) ends it CRASHED, or CANCELLED if it
was being cancelled; the temporary folder is removed either way. The exit code is 0 when the
run COMPLETED and 1 otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivace.engine.states import FINAL_TYPES, StateType
from vivace.exceptions import ConfigurationError, DeploymentError, ResumeError

if TYPE_CHECKING:
    from vivace.engine.flows import Flow
    from vivace.store.deployments import DeploymentRecord
    from vivace.store.records import FlowRunRecord

EXIT_COMPLETED = 0
EXIT_NOT_COMPLETED = 1
EXIT_BAD_INPUT = 2
WORKER_ID_VARIABLE = "VIVACE_WORKER_ID"
"""Set by a worker in the environment of each run it launches: the worker that claimed it."""

logger = logging.getLogger("vivace.flow_runs")


def execute_flow_run(flow_run_id: uuid.UUID | str) -> int:
    """Run the deployment's flow run ``flow_run_id`` here; return the process exit code.

    The database is the one the settings name (``VIVACE_DATABASE_URL``).
    """
    from vivace._ids import parse_id
    from vivace.settings import get_settings
    from vivace.store.database import masked_url
    from vivace.store.queries import read_flow_run

    url = get_settings().resolved_database_url
    try:
        run_id = parse_id(flow_run_id, "flow run id")
    except ConfigurationError as error:
        return _refuse(str(error), EXIT_BAD_INPUT)
    record = read_flow_run(url, run_id)
    if record is None:
        return _refuse(
            f"flow run {str(run_id)!r} not found in the run history at {masked_url(url)}; "
            "expected the id of a deployment's flow run",
            EXIT_BAD_INPUT,
        )
    label = f"flow run {record.name!r} ({record.id})"
    if record.deployment_id is None or record.deployment_version is None:
        return _refuse(
            f"{label} is not a run of a deployment; only a deployment's runs can be started "
            "with `python -m vivace.engine` (`vivace flow-run retry` runs a failed one again)",
            EXIT_BAD_INPUT,
        )
    if record.state_type is StateType.CANCELLING:
        return _cancel(url, record, label)
    if record.state_type in FINAL_TYPES:
        return _refuse(
            f"{label} already ended {record.state_name} ({record.state_type.value}); "
            "there is nothing to run"
        )
    taken = _take(url, record, os.environ.get(WORKER_ID_VARIABLE))
    if taken is None:
        now = read_flow_run(url, run_id)
        if now is not None and now.state_type is StateType.CANCELLING:  # cancelled meanwhile
            return _cancel(url, now, label)
        return _refuse(
            f"{label} is already being run (or was claimed by a worker that is not this "
            "process's); a flow run is run by one engine only"
        )
    # Until the flow engine's own heartbeat takes over, beat while the code is fetched and the
    # flow imported (slow storage, heavy imports): the zombies service ends a taken run whose
    # heartbeat stops, so a run whose engine dies now does not stay PENDING for good.
    from vivace.engine.heartbeat import RunHeartbeat

    starting = RunHeartbeat(url, taken.id, get_settings().heartbeat_interval, _engine_will_see)
    starting.start()
    try:
        return _execute(url, taken, starting.stop)
    except BaseException as error:  # SIGTERM (SystemExit), Ctrl-C, or a bug
        _end_if_not_started(url, taken, error)
        raise
    finally:
        starting.stop()


def _engine_will_see(seq: int) -> None:
    """A cancellation requested while the run starts: the flow engine's first heartbeat reads
    it and cancels the run, so the starting heartbeat has nothing to do."""


def _execute(url: str, record: FlowRunRecord, started: Callable[[], object]) -> int:
    """Fetch, import and run the flow; ``started()`` is called once the flow engine takes over
    (it stops the starting heartbeat)."""
    from vivace.store.deployments import read_deployment_version

    assert record.deployment_id is not None and record.deployment_version is not None
    deployment = read_deployment_version(url, record.deployment_id, record.deployment_version)
    if deployment is None:
        return _fail(
            url,
            record,
            f"its deployment's version {record.deployment_version} no longer exists (the "
            "deployment was deleted)",
        )
    with tempfile.TemporaryDirectory(prefix="vivace-run-") as folder:
        from vivace.deployments.storage import describe_storage, fetch_project

        try:
            copied = fetch_project(deployment.storage, folder)
        except DeploymentError as error:
            return _fail(url, record, str(error))
        if copied == 0:
            return _fail(
                url,
                record,
                f"the deployment's code cannot be fetched from "
                f"{describe_storage(deployment.storage)}: no files are there (removed?)",
            )
        with _inside(folder):
            try:
                flow = _load(deployment, folder, record.flow_name)
            except ResumeError as error:
                return _fail(
                    url,
                    record,
                    f"the flow of deployment {deployment.name!r} (version {deployment.version}) "
                    f"cannot be imported from its entrypoint {deployment.entrypoint!r}: {error}",
                )
            started()
            state = _run(flow, dataclasses.replace(record, entrypoint=deployment.entrypoint))
    return EXIT_COMPLETED if state.type is StateType.COMPLETED else EXIT_NOT_COMPLETED


def _load(deployment: DeploymentRecord, folder: str, flow_name: str) -> Flow[Any, Any]:
    """The deployment's flow from the fetched code: ``path/file.py:fn`` is relative to the
    project folder, ``module:fn`` is imported with the folder first on ``sys.path``."""
    from vivace.results.resume import load_flow

    entrypoint = deployment.entrypoint
    target, sep, name = entrypoint.rpartition(":")
    if sep and target.endswith(".py"):
        path = Path(folder, target).resolve()
        if not path.is_relative_to(Path(folder).resolve()):
            raise ResumeError(f"its file {target!r} is not inside the deployment's project")
        entrypoint = f"{path}:{name}"
    flow = load_flow(entrypoint, flow_name)
    if flow.name != flow_name:
        flow = flow.with_options(name=flow_name)
    return flow


def _run(flow: Flow[Any, Any], record: FlowRunRecord) -> Any:
    """Run the flow into the run's row; return its final state (as the engine ended it)."""
    import asyncio

    from vivace.engine.flow_engine import run_flow_async, run_flow_sync
    from vivace.engine.signals import FlowRunCancelled

    try:
        if flow.is_async:
            return asyncio.run(run_flow_async(flow, (), {}, True, deployed=record))
        return run_flow_sync(flow, (), {}, True, deployed=record)
    except (FlowRunCancelled, asyncio.CancelledError):
        return _final_state(record.id)


def _final_state(run_id: uuid.UUID) -> Any:
    from vivace.settings import get_settings
    from vivace.store.queries import read_flow_run
    from vivace.store.writer import get_writer

    get_writer().flush(timeout=30)
    found = read_flow_run(get_settings().resolved_database_url, run_id)
    assert found is not None
    return found.state


@contextlib.contextmanager
def _inside(folder: str) -> Iterator[None]:
    """The fetched project first on ``sys.path`` and as the working directory, then as before."""
    previous = os.getcwd()
    sys.path.insert(0, folder)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


class _NotTaken(Exception):
    """Rolls back :func:`_take`'s transaction: the run cannot be taken."""


def _take(url: str, record: FlowRunRecord, worker: str | None) -> FlowRunRecord | None:
    """Make this process the run's engine (see the module docstring); the run afterwards, or
    None if another engine, or a worker other than ``worker`` (its id), has it."""
    import sqlalchemy as sa

    from vivace.store import schema
    from vivace.store.database import ensure_schema, get_engine, transaction
    from vivace.store.queries import read_flow_run
    from vivace.store.run_control import transition_flow_run
    from vivace.store.work_queues import CLAIMED_NAME

    try:
        worker_id = uuid.UUID(worker) if worker else None
    except ValueError:
        worker_id = None
    engine = get_engine(url)
    ensure_schema(engine)
    runs = schema.flow_runs
    not_taken = runs.c.heartbeat.is_(None)  # a SCHEDULED run with one is its engine's (retrying)
    try:
        with transaction(engine) as conn:
            if record.state_type is StateType.SCHEDULED:
                claimed = transition_flow_run(
                    conn,
                    record.id,
                    StateType.PENDING,
                    CLAIMED_NAME,
                    f"claimed by `python -m vivace.engine` (process {os.getpid()})",
                    allowed_from=(StateType.SCHEDULED,),
                    values={"worker_id": worker_id},
                    where=not_taken,
                )
                if claimed is None:
                    raise _NotTaken
            claimed_by: sa.ColumnElement[bool] = runs.c.worker_id.is_(None)
            if worker_id is not None:
                claimed_by = sa.or_(claimed_by, runs.c.worker_id == worker_id)
            taken = conn.execute(
                sa.update(runs)
                .where(
                    runs.c.id == record.id,
                    runs.c.state_type == StateType.PENDING.value,
                    not_taken,
                    claimed_by,
                )
                .values(heartbeat=time.time())
                .returning(runs.c.id)
            ).first()
            if taken is None:
                raise _NotTaken  # all or nothing: the claim above is rolled back
    except _NotTaken:
        return None
    return read_flow_run(engine, record.id)


def _end_if_not_started(url: str, record: FlowRunRecord, error: BaseException) -> None:
    """The process is stopped by ``error``: if no engine recorded the run's end (it was stopped
    before its flow started: fetching the code, importing the flow), end it CRASHED, or
    CANCELLED if it was being cancelled. Conditional, so a run the engine ended is left as is."""
    from vivace.engine.signals import run_ended
    from vivace.engine.states import describe_exception
    from vivace.store.run_control import end_unstarted_flow_run

    run_ended()  # from here on a SIGTERM must not cut this write short
    stopped = describe_exception(error)
    try:
        end_unstarted_flow_run(
            url,
            record.id,
            f"the flow run's process was stopped before its flow started: {stopped}",
            f"cancelled: its process was stopped ({stopped})",
        )
    except Exception as problem:
        logger.warning(
            "flow run %s: cannot record that its process was stopped (%s)",
            record.id,
            problem,
        )


def _fail(url: str, record: FlowRunRecord, reason: str) -> int:
    """End the run FAILED before it started, naming ``reason`` (also in its logs), unless it is
    being cancelled meanwhile: then CANCELLED. Returns the exit code."""
    from vivace.engine.signals import run_ended
    from vivace.store.database import get_engine, transaction
    from vivace.store.run_control import (
        CANCELLED_BEFORE_START,
        cancel_if_cancelling,
        transition_flow_run,
    )
    from vivace.store.writer import get_writer

    run_ended()
    message = f"the flow run could not start: {reason}"
    with transaction(get_engine(url)) as conn:
        failed = transition_flow_run(
            conn,
            record.id,
            StateType.FAILED,
            "Failed",
            message,
            allowed_from=(StateType.SCHEDULED, StateType.PENDING),
        )
        if failed is None:
            cancel_if_cancelling(conn, record.id, CANCELLED_BEFORE_START)
    writer = get_writer()
    writer.record_log(record.id, None, logger.name, logging.ERROR, message, time.time())
    writer.flush(timeout=writer.retry_seconds + 5)
    return _refuse(f"flow run {record.name!r} ({record.id}): {message}")


def _cancel(url: str, record: FlowRunRecord, label: str) -> int:
    """End a run that is being cancelled before any engine took it; return the exit code."""
    from vivace.engine.signals import run_ended
    from vivace.store.database import get_engine, transaction
    from vivace.store.run_control import CANCELLED_BEFORE_START, cancel_if_cancelling

    if record.heartbeat is not None:  # an engine runs it: that one ends it
        return _refuse(f"{label} is being cancelled; its engine ends it")
    run_ended()
    with transaction(get_engine(url)) as conn:
        cancel_if_cancelling(conn, record.id, CANCELLED_BEFORE_START)
    return _refuse(f"{label} was being cancelled: it ends CANCELLED without running")


def _refuse(message: str, code: int = EXIT_NOT_COMPLETED) -> int:
    print(f"vivace.engine: {message}", file=sys.stderr, flush=True)
    return code
