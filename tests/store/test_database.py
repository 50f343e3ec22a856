"""Engines, the transaction helpers, and the errors for URLs that are wrong or cannot be used."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.exceptions import ConfigurationError, StoreUnavailableError
from vivace.store import schema
from vivace.store.database import (
    bulk_transaction,
    connect,
    dispose_engines,
    ensure_schema,
    get_engine,
    masked_url,
    transaction,
)

UNREACHABLE_POSTGRES = "postgresql+psycopg://vivace:s3cret@127.0.0.1:1/nothing"


def _sqlite_url(home: Path, name: str = "vivace.db") -> str:
    return f"sqlite:///{home / name}"


def test_engine_is_cached_per_url(vivace_home: Path) -> None:
    first, other = _sqlite_url(vivace_home), _sqlite_url(vivace_home, "other.db")

    assert get_engine(first) is get_engine(first)
    assert get_engine(other) is not get_engine(first)


def test_dispose_engines_forgets_them(vivace_home: Path) -> None:
    url = _sqlite_url(vivace_home)
    engine = get_engine(url)

    dispose_engines()

    assert get_engine(url) is not engine


def test_sqlite_engine_creates_its_folder_and_tunes_each_connection(
    vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_SQLITE_BUSY_TIMEOUT", "2.5")
    url = _sqlite_url(vivace_home / "nested" / "folder")

    with connect(get_engine(url)) as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout")
        }

    assert (vivace_home / "nested" / "folder" / "vivace.db").is_file()
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 2500}


def test_postgres_engine_keeps_a_small_pool_and_reads_times_in_utc(postgres_url: str) -> None:
    engine = get_engine(postgres_url)

    assert isinstance(engine.pool, sa.QueuePool)
    assert engine.pool.size() == 2
    with connect(engine) as conn:
        settings = conn.exec_driver_sql(
            "SELECT current_setting('application_name'), current_setting('TimeZone')"
        ).one()
    assert tuple(settings) == ("vivace", "UTC")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("mysql://root:s3cret@db/vivace", "driver 'mysql'", id="unknown-driver"),
        pytest.param(
            "postgresql://u:s3cret@db/vivace", "driver 'postgresql'", id="postgres-without-psycopg"
        ),
        pytest.param("not a url", "not a valid SQLAlchemy URL", id="unparsable"),
        pytest.param("sqlite://", "in-memory", id="sqlite-in-memory"),
    ],
)
def test_unusable_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="expected") as raised:
        get_engine(url)

    text = str(raised.value)
    assert message in text
    assert "s3cret" not in text
    assert "postgresql+psycopg://" in text or "sqlite:///" in text


def test_unreachable_database_is_store_unavailable() -> None:
    engine = get_engine(UNREACHABLE_POSTGRES)

    with pytest.raises(StoreUnavailableError) as raised:
        ensure_schema(engine)
    with pytest.raises(StoreUnavailableError), transaction(engine):
        pass  # pragma: no cover - never reached

    text = str(raised.value)
    assert "postgresql+psycopg://vivace:***@127.0.0.1:1/nothing" in text
    assert "refused" in text.lower()
    assert "VIVACE_DATABASE_URL" in text
    assert "s3cret" not in text
    assert "\n" not in text


def test_sqlite_folder_that_cannot_be_made_is_store_unavailable(vivace_home: Path) -> None:
    vivace_home.mkdir()
    (vivace_home / "a-file").write_text("not a folder")

    with pytest.raises(StoreUnavailableError, match="a-file"):
        get_engine(_sqlite_url(vivace_home / "a-file" / "sub"))


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url(UNREACHABLE_POSTGRES) == (
        "postgresql+psycopg://vivace:***@127.0.0.1:1/nothing"
    )
    assert masked_url("sqlite:////tmp/vivace.db") == "sqlite:////tmp/vivace.db"


# -- the transaction helper, on every backend ---------------------------------------------------


def _flow_names(engine: sa.Engine) -> list[str]:
    with connect(engine) as conn:
        return list(conn.execute(sa.select(schema.flows.c.name)).scalars())


def test_transaction_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    engine = get_engine(database_url)
    ensure_schema(engine)

    with transaction(engine) as conn:
        conn.execute(schema.flows.insert(), [{"id": uuid7(), "name": "kept", "created": 0.0}])
    with pytest.raises(RuntimeError), transaction(engine) as conn:
        conn.execute(schema.flows.insert(), [{"id": uuid7(), "name": "dropped", "created": 0.0}])
        raise RuntimeError("undo")

    assert _flow_names(engine) == ["kept"]


def test_sql_errors_stay_sql_errors(database_url: str) -> None:
    engine = get_engine(database_url)

    # A mistake in the statement is a bug to see, not an outage to retry.
    with pytest.raises(sa.exc.DBAPIError, match="no_such_table"), transaction(engine) as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")


# -- backend-specific ---------------------------------------------------------------------------


def test_sqlite_transaction_takes_the_write_lock_up_front(vivace_home: Path) -> None:
    url = _sqlite_url(vivace_home)
    engine = get_engine(url)
    ensure_schema(engine)
    other = sqlite3.connect(vivace_home / "vivace.db", timeout=0, isolation_level=None)

    # No statement yet, and another writer is already shut out.
    with transaction(engine), pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")
    other.close()


@pytest.mark.parametrize("helper", [transaction, bulk_transaction], ids=["sa", "bulk"])
def test_sqlite_locked_past_the_busy_timeout_is_store_unavailable(
    vivace_home: Path, monkeypatch: pytest.MonkeyPatch, helper: Any
) -> None:
    monkeypatch.setenv("VIVACE_SQLITE_BUSY_TIMEOUT", "0.01")
    engine = get_engine(_sqlite_url(vivace_home))
    ensure_schema(engine)
    other = sqlite3.connect(vivace_home / "vivace.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    with pytest.raises(StoreUnavailableError, match="database is locked"), helper(engine):
        pass  # pragma: no cover - never reached

    other.execute("ROLLBACK")
    other.close()


def test_lost_postgres_connection_is_store_unavailable(postgres_url: str) -> None:
    engine = get_engine(postgres_url)

    with pytest.raises(StoreUnavailableError, match="terminat"), transaction(engine) as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with connect(engine) as killer:
            killer.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        conn.exec_driver_sql("SELECT 1")

    with connect(engine) as conn:  # the pool recovers by itself
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


# -- the writer's transaction on the driver's own connection ------------------------------------


def _insert_flow(driver_connection: Any, name: str, dialect: str) -> None:
    flow_id = uuid7()
    if dialect == "postgresql":
        with driver_connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO flows (id, name, created) VALUES (%s, %s, to_timestamp(0))",
                (flow_id, name),
            )
    else:
        driver_connection.execute(
            "INSERT INTO flows (id, name, created) VALUES (?, ?, 0.0)", (flow_id.bytes, name)
        )


def test_bulk_transaction_commits_on_success_and_rolls_back_on_error(database_url: str) -> None:
    engine = get_engine(database_url)
    ensure_schema(engine)
    dialect = engine.dialect.name

    with bulk_transaction(engine) as driver_connection:
        _insert_flow(driver_connection, "kept", dialect)
    with pytest.raises(RuntimeError), bulk_transaction(engine) as driver_connection:
        _insert_flow(driver_connection, "dropped", dialect)
        raise RuntimeError("undo")

    assert _flow_names(engine) == ["kept"]
    with connect(engine) as conn:  # the connection went back to the pool outside a transaction
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_bulk_transaction_sql_errors_stay_sql_errors(database_url: str) -> None:
    engine = get_engine(database_url)

    with (
        pytest.raises(sa.exc.DBAPIError, match="no_such_table") as raised,
        bulk_transaction(engine) as driver_connection,
    ):
        driver_connection.cursor().execute("SELECT * FROM no_such_table")

    assert not isinstance(raised.value, StoreUnavailableError)
    assert not raised.value.connection_invalidated


@pytest.mark.parametrize("helper", [transaction, bulk_transaction], ids=["sa", "bulk"])
def test_a_sqlite_file_that_cannot_be_opened_is_store_unavailable(
    vivace_home: Path, helper: Any
) -> None:
    vivace_home.mkdir()
    (vivace_home / "vivace.db").mkdir()  # a folder where the database file should be
    engine = get_engine(_sqlite_url(vivace_home))

    with pytest.raises(StoreUnavailableError, match="unable to open database"), helper(engine):
        pass  # pragma: no cover - never reached


def test_bulk_transaction_on_an_unreachable_database_is_store_unavailable() -> None:
    engine = get_engine(UNREACHABLE_POSTGRES)

    with pytest.raises(StoreUnavailableError, match="refused") as raised, bulk_transaction(engine):
        pass  # pragma: no cover - never reached

    assert "s3cret" not in str(raised.value)


def test_bulk_transaction_drops_a_lost_postgres_connection(postgres_url: str) -> None:
    engine = get_engine(postgres_url)

    with (
        pytest.raises(StoreUnavailableError, match="terminat"),
        bulk_transaction(engine) as driver_connection,
    ):
        pid = driver_connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        with connect(engine) as killer:
            killer.execute(sa.select(sa.func.pg_terminate_backend(pid)))
        driver_connection.execute("SELECT 1")

    with bulk_transaction(engine) as driver_connection:  # a new connection, not the dead one
        assert driver_connection.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
