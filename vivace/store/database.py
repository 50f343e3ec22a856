"""Engines, schema migrations and the transaction helpers every write goes through.

``get_engine(url)`` gives one engine per URL per process, tuned for the backend: SQLite in WAL mode
with a busy timeout (several processes write to the same file), PostgreSQL with a small pool (writes
are batched, so a handful of connections is enough). ``ensure_schema(engine)`` brings the database
to the latest migration the first time the process uses it, under a lock shared with other
processes starting at the same moment (Dask or Ray workers). ``transaction(engine)`` and
``connect(engine)`` turn "the database cannot be reached or used" into ``StoreUnavailableError``,
and so does ``bulk_transaction(engine)``, the batched writer's transaction on the driver's own
connection; the writer retries such errors and then journals its batch to disk.

Example::

    engine = get_engine(get_settings().resolved_database_url)
    ensure_schema(engine)
    with transaction(engine) as conn:
        conn.execute(schema.flows.insert(), rows)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from vivace.exceptions import ConfigurationError, StoreError, StoreUnavailableError
from vivace.settings import get_settings
from vivace.store import schema

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

HEAD_REVISION = "0007"
"""The newest migration in ``migrations/versions``; a test pins it to Alembic's head."""

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_EXPECTED_URLS = (
    "sqlite:///path/to/vivace.db or postgresql+psycopg://user:password@host:5432/dbname"
)
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_POSTGRES_DRIVERS = {"postgresql+psycopg"}
# Key of the PostgreSQL advisory lock held while migrating ("vivace" in ASCII).
_PG_MIGRATION_LOCK_KEY = 0x766976616365
# Execution option telling the SQLite "begin" hook which BEGIN to emit.
_SQLITE_BEGIN = "vivace_sqlite_begin"
# sqlite3 OperationalError texts that mean "the file cannot be used now", not "bad SQL".
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "database is busy",
    "unable to open database",
    "disk i/o error",
    "readonly database",
    "database or disk is full",
    "file is not a database",
)

_lock = threading.Lock()
_engines: dict[str, sa.Engine] = {}
_migrated: set[str] = set()


def get_engine(url: str) -> sa.Engine:
    """The process's engine for ``url``, created on first use (no connection is opened yet)."""
    engine = _engines.get(url)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            _engines[url] = engine
        return engine


def ensure_schema(engine: sa.Engine) -> None:
    """Migrate the database to the latest revision, once per process and URL.

    Safe when several processes start at once: the upgrade runs under an exclusive lock (a lock
    file next to a SQLite database, an advisory lock on PostgreSQL), and the revision is checked
    again under it, so only the first process migrates. Alembic is imported only to upgrade.
    """
    key = _memo_key(engine)
    if key in _migrated:
        return
    if _current_revision(engine) != HEAD_REVISION:
        with _migration_lock(engine):
            if _current_revision(engine) != HEAD_REVISION:
                _upgrade(engine)
    _migrated.add(key)


def upgrade_database(url: str) -> str | None:
    """Migrate the database at ``url`` to the latest revision; return the revision it was at.

    ``None`` means the database had no vivace tables yet.
    """
    engine = get_engine(url)
    _migrated.discard(_memo_key(engine))
    before = _current_revision(engine)
    ensure_schema(engine)
    return before


def reset_database(url: str) -> None:
    """Drop every vivace table (all run history) and recreate them at the latest revision."""
    engine = get_engine(url)
    _migrated.discard(_memo_key(engine))
    with _migration_lock(engine), transaction(engine) as conn:
        schema.metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    ensure_schema(engine)


def dispose_engines() -> None:
    """Close every cached engine's connections and forget engines and migrated URLs."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
        _migrated.clear()
    for engine in engines:
        engine.dispose()


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction: commits on success, rolls back on error.

    On SQLite it starts with ``BEGIN IMMEDIATE``, taking the write lock up front (waiting up to
    the busy timeout) rather than failing with "database is locked" when a read in the same
    transaction later turns into a write.
    """
    with _translate_errors(engine), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def bulk_transaction(engine: sa.Engine) -> Iterator[Any]:
    """A write transaction on the database driver's own connection (``sqlite3`` or psycopg),
    for the batched writer's bulk statements. Errors as from ``transaction``: an unusable
    database is ``StoreUnavailableError``, any other driver error a SQLAlchemy ``DBAPIError``.

    SQLAlchemy's connection and transaction objects cost the writer ~80 µs a transaction in a
    tight loop, several times that on a busy Dask or Ray worker, and the writer needs none of
    what they add. The connection still comes from, and goes back to, the engine's pool.
    """
    dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
    with _translate_errors(engine):
        try:
            # The pool hands out the driver's errors unwrapped (a file that cannot be opened,
            # a refused connection): wrapped here as engine.connect() would.
            pooled = engine.raw_connection()
        except dbapi_error as error:
            raise sa.exc.DBAPIError.instance(None, None, error, dbapi_error) from error
        try:
            driver_connection: Any = pooled.driver_connection
            try:
                if engine.dialect.name == "sqlite":
                    # Autocommit mode (see _on_connect): the write lock up front, as above.
                    driver_connection.execute("BEGIN IMMEDIATE")
                yield driver_connection
                driver_connection.commit()
            except BaseException as error:
                _roll_back_quietly(pooled)
                if not isinstance(error, dbapi_error):
                    raise
                driver_error: Any = error
                lost = engine.dialect.is_disconnect(driver_error, pooled.dbapi_connection, None)
                if lost:  # this connection only; pool_pre_ping finds any other dead one
                    pooled.invalidate(error)
                raise sa.exc.DBAPIError.instance(
                    None, None, error, dbapi_error, connection_invalidated=lost
                ) from error
        finally:
            pooled.close()


def _roll_back_quietly(pooled: Any) -> None:
    try:
        if pooled.driver_connection is not None and getattr(
            pooled.driver_connection, "in_transaction", True
        ):
            pooled.driver_connection.rollback()
    except Exception:  # the connection is gone: the pool finds out when it gets it back
        pass


@contextlib.contextmanager
def connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reads, with the same error translation as ``transaction``."""
    with _translate_errors(engine), engine.connect() as conn:
        yield conn


def conflict_insert(dialect: str, table: sa.Table) -> Any:
    """``INSERT INTO table`` in ``dialect``'s own flavour (``"sqlite"`` or ``"postgresql"``):
    the generic insert has no ``on_conflict_do_nothing`` / ``on_conflict_do_update``; both
    dialects' inserts have them, spelled alike."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def masked_url(url: str | sa.URL) -> str:
    """The URL with its password replaced by ``***``, for messages and the CLI."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return str(url)


# -- engines ------------------------------------------------------------------------------------


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigurationError(
            f"database URL {masked_url(url)!r} is not a valid SQLAlchemy URL; "
            f"expected {_EXPECTED_URLS}"
        ) from None
    if parsed.drivername in _SQLITE_DRIVERS:
        return _create_sqlite_engine(parsed)
    if parsed.drivername in _POSTGRES_DRIVERS:
        return _create_postgres_engine(parsed)
    raise ConfigurationError(
        f"database URL {masked_url(parsed)!r} uses the driver {parsed.drivername!r}, which vivace "
        f"does not support; expected {_EXPECTED_URLS}"
    )


def _create_sqlite_engine(url: sa.URL) -> sa.Engine:
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise ConfigurationError(
            f"database URL {str(url)!r} is an in-memory SQLite database, which each connection "
            f"sees separately; expected a file, such as sqlite:///path/to/vivace.db"
        )
    if not database.startswith("file:"):
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailableError(
                f"cannot create the folder {str(folder)!r} for the SQLite database at "
                f"{masked_url(url)}: {error}; set VIVACE_HOME or VIVACE_DATABASE_URL to a "
                "writable place"
            ) from error
    busy_timeout_ms = int(get_settings().sqlite_busy_timeout * 1000)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3 would BEGIN only before DML; the "begin" hook below emits BEGIN itself so
        # reads, DDL and savepoints are transactional too.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        _switch_to_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))

    return engine


def _switch_to_wal(cursor: Any, timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another process holds the database.

    SQLite answers this pragma "database is locked" at once, without calling the busy handler,
    when another connection is switching the same new file to WAL at that moment (two processes
    opening a fresh database together), so the busy timeout alone does not cover it.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _create_postgres_engine(url: sa.URL) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10  # libpq waits forever by default
    if "application_name" not in url.query:
        connect_args["application_name"] = "vivace"
    if "options" not in url.query:
        # Times read back in UTC whatever the server's zone, as they are on SQLite.
        connect_args["options"] = "-c timezone=UTC"
    try:
        return sa.create_engine(
            url,
            pool_size=2,
            max_overflow=3,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
    except ModuleNotFoundError as error:
        raise ConfigurationError(
            f"database URL {masked_url(url)!r} needs the {error.name!r} driver, which is not "
            "installed; expected it to be installed with: pip install 'vivace[postgres]'"
        ) from None


def _memo_key(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _after_fork_in_child() -> None:
    # A forked child must not reuse the parent's pooled connections (they share sockets and file
    # descriptors); dispose(close=False) gives each engine a fresh pool and leaves the parent's
    # connections alone. The memo of migrated URLs stays true in the child.
    global _lock
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- errors -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _translate_errors(engine: sa.Engine) -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as error:
        if not _is_unavailable(engine, error):
            raise
        raise _unavailable(engine.url, error) from error


def _is_unavailable(engine: sa.Engine, error: sa.exc.DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    if not isinstance(error, sa.exc.OperationalError):
        return False
    if engine.dialect.name == "sqlite":
        text = str(error.orig).lower()
        return any(fragment in text for fragment in _SQLITE_UNAVAILABLE)
    # On PostgreSQL every OperationalError is about the server or the connection, except
    # serialization failures and deadlocks (SQLSTATE class 40), which the caller retries.
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    return not sqlstate.startswith("40")


def _unavailable(url: sa.URL, error: sa.exc.DBAPIError) -> StoreUnavailableError:
    reason = " ".join(str(error.orig).split())
    return StoreUnavailableError(
        f"cannot use the run-history database at {masked_url(url)}: {reason}; "
        "check that the database is running and reachable, or set VIVACE_DATABASE_URL "
        "to another database URL"
    )


# -- migrations ---------------------------------------------------------------------------------


def _current_revision(engine: sa.Engine) -> str | None:
    with connect(engine) as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


@contextlib.contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold an exclusive lock shared by every process migrating the same database."""
    if engine.dialect.name == "sqlite":
        with _sqlite_file_lock(Path(engine.url.database or "")):
            yield
        return
    with connect(engine) as conn:
        conn.execute(sa.select(sa.func.pg_advisory_lock(_PG_MIGRATION_LOCK_KEY)))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(_PG_MIGRATION_LOCK_KEY)))
            conn.commit()


@contextlib.contextmanager
def _sqlite_file_lock(database: Path) -> Iterator[None]:
    import fcntl

    lock_path = database.expanduser().with_name(database.name + ".migrate.lock")
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    """An Alembic config for vivace's migrations, found next to this module (no alembic.ini).

    Given a connection, the migrations run on it, inside its transaction.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(engine: sa.Engine) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    # One transaction for the whole upgrade: DDL is transactional on both backends, so a
    # failed migration leaves the database as it was.
    with transaction(engine) as conn:
        config = alembic_config(conn)
        try:
            command.upgrade(config, "head")
        except CommandError as error:
            raise StoreError(
                f"cannot migrate the run-history database at {masked_url(engine.url)}: {error}; "
                "expected a database created by this or an older version of vivace"
            ) from error
