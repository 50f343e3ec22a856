"""Settings: every one has an environment variable ``VIVACE_<NAME>``, a default and a description.

Read once per process and cached; ``reset_settings()`` drops the cache (tests change the
environment between runs).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path("~/.vivace").expanduser()


class Settings(BaseSettings):
    """vivace's settings, read from ``VIVACE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="VIVACE_", extra="ignore", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Folder for the embedded database, the write journal and local results.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the run-history database; default: SQLite at $VIVACE_HOME/vivace.db."
        ),
    )
    recorder_flush_interval: float = Field(
        default=0.1,
        gt=0,
        description="Seconds between the background writer's batched flushes.",
    )
    recorder_batch_size: int = Field(
        default=1000,
        gt=0,
        description="Queued records that trigger a flush before the interval is up.",
    )
    recorder_max_queue: int = Field(
        default=100_000,
        gt=0,
        description="Queued records at which producers wait for the writer (bounds memory).",
    )
    recorder_retry_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds the writer retries an unreachable database before journaling.",
    )
    sqlite_busy_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds SQLite waits for a lock held by another process.",
    )
    logging_level: str = Field(
        default="INFO",
        description="Level of vivace's console logging and of run logs sent to the store.",
    )
    logging_console: bool = Field(
        default=True,
        description="Print run logs to the console (stderr) as well as storing them.",
    )

    api_url: str | None = Field(
        default=None,
        description=(
            "URL of a vivace server (e.g. http://127.0.0.1:4200/api) for clients that read "
            "through the HTTP API instead of the database."
        ),
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key that clients send to the server at VIVACE_API_URL.",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Extra API keys the server accepts, as comma-separated ROLE:KEY pairs "
            "(ROLE is read or admin), besides those created with `vivace api-key create`."
        ),
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description=(
            "Fernet key that encrypts blocks' secret fields at rest; default: a key generated "
            "once into $VIVACE_HOME/encryption.key (mode 0600)."
        ),
    )
    local_storage_path: Path | None = Field(
        default=None,
        description=(
            "Folder where persisted task and flow results are written when a task names no "
            "result_storage; default: $VIVACE_HOME/storage."
        ),
    )
    results_persist_by_default: bool = Field(
        default=False,
        description=(
            "Persist every task's and flow's result unless it says persist_result=False "
            "(results a resumed flow run can reuse)."
        ),
    )
    writer_stats_interval: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between a writer's health rows (queue depth, flush latency).",
    )

    deployment_storage: str | None = Field(
        default=None,
        description=(
            "Where `vivace deploy` uploads a project's code when the deployment names no storage: "
            "a folder, an fsspec URL (s3://bucket/prefix) or block:NAME of a filesystem block "
            "(default: $VIVACE_HOME/deployments)."
        ),
    )
    heartbeat_interval: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds between heartbeats of every running flow run (and of a worker); also how "
            "soon a deployment's running flow run notices it is being cancelled."
        ),
    )

    # -- the server's services (vivace.services) ------------------------------------------------
    server_services: bool = Field(
        default=True,
        description=(
            "Run the services (scheduler, late and zombie runs, notifications, retention) inside "
            "`vivace server start`; off when they run alone (`vivace server services start`)."
        ),
    )
    scheduler_loop_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between the scheduler's loops, which create deployments' runs.",
    )
    scheduler_max_runs: int = Field(
        default=100,
        gt=0,
        description="Scheduled runs the scheduler keeps created ahead, per schedule, at most.",
    )
    scheduler_max_scheduled_time: dt.timedelta = Field(
        default=dt.timedelta(days=100),
        gt=dt.timedelta(0),
        description=(
            "How far ahead the scheduler creates runs, at most (seconds, or ISO 8601 like P100D)."
        ),
    )
    late_after_seconds: float = Field(
        default=15.0,
        ge=0,
        description="Seconds after its scheduled time at which a run not yet started is Late.",
    )
    late_runs_loop_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between the loops that mark late runs Late (and skip the too late).",
    )
    heartbeat_missed_limit: int = Field(
        default=3,
        gt=0,
        description=(
            "Heartbeat intervals a RUNNING flow run may stay silent before it is marked CRASHED."
        ),
    )
    zombies_loop_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between the loops that look for flow runs whose heartbeat stopped.",
    )
    concurrency_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds a concurrency slot is held without renewal: the slots of a holder that "
            "died come back after this (live holders renew them every third of it)."
        ),
    )
    notifications_loop_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between the loops that send notifications.",
    )
    notification_max_attempts: int = Field(
        default=5,
        gt=0,
        description="Attempts to deliver one notification before it is recorded as failed.",
    )
    ui_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the web UI as people reach it (e.g. https://vivace.example.com), for "
            "the links in notifications; default: VIVACE_API_URL without /api."
        ),
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Delete flow runs (with their task runs, states and logs) that ended more than this "
            "many days ago; default: keep everything."
        ),
    )
    retention_loop_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds between the retention service's loops.",
    )
    retention_batch_size: int = Field(
        default=500,
        gt=0,
        description="Flow runs the retention service deletes per transaction (short locks).",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("scheduler_max_scheduled_time", mode="before")
    @classmethod
    def _seconds_as_timedelta(cls, value: object) -> object:
        # The environment gives strings: "8640000" means seconds, like a number would.
        if isinstance(value, str):
            try:
                return dt.timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @field_validator("logging_level", mode="after")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(
                f"VIVACE_LOGGING_LEVEL {value!r} is not a logging level; "
                "expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return level

    @property
    def resolved_local_storage_path(self) -> Path:
        """The folder for local results in force: the setting, or ``$VIVACE_HOME/storage``."""
        path = self.local_storage_path or self.home / "storage"
        return path.expanduser().absolute()

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the setting, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'vivace.db'}"


def secret_value(value: SecretStr | None) -> str | None:
    """The plain text of a secret setting (they are ``SecretStr`` so reprs and
    ``vivace config view`` never show them), or None when it is not set."""
    return None if value is None else value.get_secret_value()


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _cached
    if _cached is None:
        _cached = Settings()
    return _cached


def use_settings(settings: Settings) -> None:
    """Make ``settings`` this process's settings (a cluster worker takes its flow's settings)."""
    global _cached
    _cached = settings


def reset_settings() -> None:
    """Forget the cached settings so the next ``get_settings()`` reads the environment again."""
    global _cached
    _cached = None


def setting_sources() -> dict[str, str]:
    """Where each setting's value comes from: 'env' or 'default'."""
    return {
        name: ("env" if f"VIVACE_{name.upper()}" in os.environ else "default")
        for name in Settings.model_fields
    }
