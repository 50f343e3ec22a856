"""Fixtures shared by the whole suite.

- ``vivace_home`` (autouse): every test runs with its own empty ``VIVACE_HOME`` (a temporary
  folder, so its own SQLite file and journal), no other ``VIVACE_*`` variable from the developer's
  shell, and fresh settings. Afterwards the process's writers are flushed and stopped and its
  database engines closed, so nothing leaks into the next test.
- ``database_url``: a test that asks for it runs twice, ``[sqlite]`` and ``[postgres]``, each time
  on an empty database (no tables) that ``VIVACE_DATABASE_URL`` points at. PostgreSQL is the server
  at ``VIVACE_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
  the session creates a database of its own there, empties it before each test and drops it at the
  end. If the server cannot be used the postgres cases error out rather than skip: CI must
  exercise PostgreSQL for real.
- ``postgres_url``: that same database, for the few tests of PostgreSQL alone.
- ``history``: reads what runs recorded, through plain SQLAlchemy Core on the store's tables.
- ``live_server``: a real uvicorn server on 127.0.0.1 (a free port) over ``database_url``, in a
  thread of the test process; its base URL, e.g. ``http://127.0.0.1:41234``. For browser tests,
  schemathesis, workers and anything that needs a socket.
- ``moto_server``: a moto server (AWS S3, ECS, ... on 127.0.0.1) in its own process for the session;
  a test that asks for it gets its endpoint URL, with ``AWS_ENDPOINT_URL`` and dummy credentials
  set in the environment (so subprocesses reach it too).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from vivace.settings import Settings, reset_settings

# A Ray driver replaces faulthandler's fatal-signal handlers with its own, which prints nothing
# once Ray is shut down: a test process that crashed after any Ray test died without a word.
# Without Ray's handlers a crash shows the stack of every thread (read by Ray at import).
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")

POSTGRES_SERVER_URL = os.environ.get(
    "VIVACE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def vivace_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary ``VIVACE_HOME`` for the test; the process's store is shut down afterwards."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"VIVACE_{name.upper()}", raising=False)
    home = tmp_path / "vivace-home"
    monkeypatch.setenv("VIVACE_HOME", str(home))
    reset_settings()
    yield home
    _shut_down_store()
    reset_settings()


def _shut_down_store() -> None:
    # Only modules the test imported can hold writers or engines. Looking them up in sys.modules
    # (rather than importing them) keeps tests that never touch the store free of it.
    writer = sys.modules.get("vivace.store.writer")
    if writer is not None:
        writer.shutdown_writers()
    database = sys.modules.get("vivace.store.database")
    if database is not None:
        database.dispose_engines()


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres")]
)
def database_url(
    request: pytest.FixtureRequest, vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The URL of an empty database, set as ``VIVACE_DATABASE_URL``; one case per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{vivace_home / 'vivace.db'}"
    else:
        database: _PostgresDatabase = request.getfixturevalue("_postgres_database")
        database.drop_tables()
        url = database.url
    monkeypatch.setenv("VIVACE_DATABASE_URL", url)
    reset_settings()
    return url


@pytest.fixture(scope="session")
def postgres_url(_postgres_database: _PostgresDatabase) -> str:
    """The session's PostgreSQL database, for tests of PostgreSQL alone (it is not emptied)."""
    return _postgres_database.url


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[_PostgresDatabase]:
    """A database of this test session on the PostgreSQL server, dropped at the end."""
    server = sa.make_url(POSTGRES_SERVER_URL)
    # Unique even across CI containers that share one server and reuse pids.
    name = f"vivace_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    problem = None
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as error:
        problem = " ".join(str(error.orig).split())
    if problem is not None:  # failed outside the except block: one message, no chained trace
        pytest.fail(
            f"the postgres test cases need the PostgreSQL server at "
            f"{server.render_as_string(hide_password=True)}, which cannot be used ({problem}). "
            "Start it, or point VIVACE_TEST_POSTGRES_URL at another server.",
            pytrace=False,
        )
    database = _PostgresDatabase(server.set(database=name).render_as_string(hide_password=False))
    yield database
    _shut_down_store()  # no connection may stay open on the database about to be dropped
    database.engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _PostgresDatabase:
    """The session's PostgreSQL database, and one connection to empty it between tests."""

    def __init__(self, url: str) -> None:
        from vivace.store import schema

        self.url = url
        self.engine = sa.create_engine(url, pool_size=1, pool_pre_ping=True)
        tables = ["alembic_version", *schema.metadata.tables]
        self._drop_sql = f"DROP TABLE IF EXISTS {', '.join(tables)}"

    def drop_tables(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._drop_sql)


class History:
    """Reads of the run-history tables, decoded by the store's column types."""

    def _rows(self, query: Any) -> list[Any]:
        from vivace.settings import get_settings
        from vivace.store.database import connect, ensure_schema, get_engine

        engine = get_engine(get_settings().resolved_database_url)
        ensure_schema(engine)
        with connect(engine) as conn:
            return list(conn.execute(query))

    def flow_runs(self, flow_name: str | None = None) -> list[Any]:
        from vivace.store import schema

        query = sa.select(schema.flow_runs).order_by(schema.flow_runs.c.created)
        if flow_name is not None:
            query = query.where(schema.flow_runs.c.flow_name == flow_name)
        return self._rows(query)

    def flow_run(self, flow_run_id: uuid.UUID) -> Any:
        from vivace.store import schema

        rows = self._rows(sa.select(schema.flow_runs).where(schema.flow_runs.c.id == flow_run_id))
        assert len(rows) == 1, f"flow run {flow_run_id} is not in the store"
        return rows[0]

    def task_runs(self, flow_run_id: uuid.UUID | None = None) -> list[Any]:
        from vivace.store import schema

        table = schema.task_runs
        query = sa.select(table).order_by(table.c.created, table.c.id)
        if flow_run_id is not None:
            query = query.where(table.c.flow_run_id == flow_run_id)
        return self._rows(query)

    def task_run(self, task_run_id: uuid.UUID) -> Any:
        from vivace.store import schema

        rows = self._rows(sa.select(schema.task_runs).where(schema.task_runs.c.id == task_run_id))
        assert len(rows) == 1, f"task run {task_run_id} is not in the store"
        return rows[0]

    def task_run_states(self, task_run_id: uuid.UUID) -> list[Any]:
        from vivace.store import schema

        table = schema.task_run_states
        return self._rows(
            sa.select(table).where(table.c.task_run_id == task_run_id).order_by(table.c.seq)
        )

    def flow_run_states(self, flow_run_id: uuid.UUID) -> list[Any]:
        from vivace.store import schema

        table = schema.flow_run_states
        return self._rows(
            sa.select(table).where(table.c.flow_run_id == flow_run_id).order_by(table.c.seq)
        )

    def logs(
        self, flow_run_id: uuid.UUID | None = None, task_run_id: uuid.UUID | None = None
    ) -> list[Any]:
        from vivace.store import schema

        table = schema.logs
        query = sa.select(table).order_by(table.c.timestamp, table.c.id)
        if flow_run_id is not None:
            query = query.where(table.c.flow_run_id == flow_run_id)
        if task_run_id is not None:
            query = query.where(table.c.task_run_id == task_run_id)
        return self._rows(query)


@pytest.fixture
def history() -> History:
    """Read what runs recorded in the database the test's settings point at."""
    return History()


@pytest.fixture
def api(database_url: str) -> Iterator[Any]:
    """A ``TestClient`` (in-process, no socket) of a server over the test's ``database_url``."""
    with warnings.catch_warnings():
        # Starlette 1.x's TestClient prefers httpx2 and warns (once, on import) that it falls
        # back to httpx, which the dev extra pins; the fallback works as before.
        warnings.filterwarnings(
            "ignore", "Using `httpx` with `starlette.testclient`", category=UserWarning
        )
        from fastapi.testclient import TestClient

    from vivace.server.app import create_app

    with TestClient(create_app(database_url)) as client:
        yield client


@pytest.fixture
def live_server(database_url: str) -> Iterator[str]:
    yield from serve(database_url)


def serve(database_url: str) -> Iterator[str]:
    """Run a server over ``database_url`` on a free loopback port until the generator closes."""
    import uvicorn

    from vivace.server.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(database_url), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def states_as_an_older_vivace_writes_them() -> sa.TableClause:
    """``flow_run_states`` with the columns a process running vivace before revision 0007
    writes: no ``recorded``."""
    from vivace.store.types import Timestamp, UUIDType

    return sa.table(
        "flow_run_states",
        sa.column("flow_run_id", UUIDType),
        sa.column("seq"),
        sa.column("type"),
        sa.column("name"),
        sa.column("timestamp", Timestamp),
        sa.column("message"),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def _moto_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def moto_server(_moto_process: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's moto server endpoint, with the AWS environment pointing at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", _moto_process)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return _moto_process
