"""Settings from VIVACE_* variables, their errors, and ``vivace config view``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from vivace.cli import cli
from vivace.settings import Settings, get_settings, reset_settings, setting_sources


def config_view(*flags: str) -> Result:
    return CliRunner().invoke(cli, ["config", "view", *flags])


def test_defaults(vivace_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIVACE_HOME")
    monkeypatch.setenv("HOME", str(vivace_home.parent))
    reset_settings()

    settings = get_settings()

    assert settings.home == vivace_home.parent / ".vivace"
    assert settings.database_url is None
    assert settings.resolved_database_url == f"sqlite:///{vivace_home.parent}/.vivace/vivace.db"
    assert (settings.recorder_batch_size, settings.logging_level) == (1000, "INFO")


def test_environment_overrides_and_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_RECORDER_BATCH_SIZE", "10")
    monkeypatch.setenv("VIVACE_LOGGING_LEVEL", "debug")
    monkeypatch.setenv("VIVACE_DATABASE_URL", "postgresql+psycopg://db/vivace")
    reset_settings()

    settings = get_settings()
    monkeypatch.setenv("VIVACE_RECORDER_BATCH_SIZE", "20")

    assert (settings.recorder_batch_size, settings.logging_level) == (10, "DEBUG")
    assert settings.resolved_database_url == "postgresql+psycopg://db/vivace"
    assert get_settings() is settings  # cached until reset
    reset_settings()
    assert get_settings().recorder_batch_size == 20


def test_sources_say_env_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_LOGGING_CONSOLE", "false")

    sources = setting_sources()

    assert sources["logging_console"] == "env"
    assert sources["home"] == "env"  # set by the test fixture
    assert sources["recorder_batch_size"] == "default"


def test_bad_logging_level_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_LOGGING_LEVEL", "loud")
    reset_settings()

    with pytest.raises(ValidationError, match="VIVACE_LOGGING_LEVEL 'loud' is not a logging level"):
        get_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param("VIVACE_LOGGING_LEVEL", "loud", "VIVACE_LOGGING_LEVEL 'loud'", id="level"),
        pytest.param(
            "VIVACE_RECORDER_BATCH_SIZE",
            "-1",
            "VIVACE_RECORDER_BATCH_SIZE='-1': Input should be greater than 0",
            id="batch-size",
        ),
    ],
)
def test_cli_reports_a_bad_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    reset_settings()

    result = config_view()

    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("Error: invalid setting: ")
    assert result.stderr.count("\n") == 1


# -- vivace config view -------------------------------------------------------------------------


def test_config_view_shows_changed_settings_and_the_database(
    vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIVACE_RECORDER_BATCH_SIZE", "10")
    monkeypatch.setenv("VIVACE_LOGGING_LEVEL", "INFO")  # set, but to the default

    result = config_view()

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"VIVACE_HOME={vivace_home}",
        "VIVACE_RECORDER_BATCH_SIZE=10",
        f"Database URL in force: sqlite:///{vivace_home}/vivace.db",
    ]


def test_config_view_masks_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_DATABASE_URL", "postgresql+psycopg://me:s3cret@db:5432/vivace")

    result = config_view()

    assert "VIVACE_DATABASE_URL=postgresql+psycopg://me:***@db:5432/vivace" in result.stdout
    assert "Database URL in force: postgresql+psycopg://me:***@db:5432/vivace" in result.stdout
    assert "s3cret" not in result.output


def test_secret_settings_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "VIVACE_API_KEY": "vvc_client-key-value",
        "VIVACE_API_KEYS": "read:server-key-value-1234",
        "VIVACE_ENCRYPTION_KEY": "encryption-key-value",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    result = config_view()
    settings = get_settings()

    for name, value in secrets.items():
        assert f"{name}=**********" in result.stdout
        assert value not in result.output
        assert value not in repr(settings)
    assert settings.api_keys is not None
    assert settings.api_keys.get_secret_value() == secrets["VIVACE_API_KEYS"]


def test_config_view_with_defaults_and_sources(vivace_home: Path) -> None:
    result = config_view("--show-defaults", "--show-sources")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"VIVACE_HOME={vivace_home} (from env)" in lines
    assert "VIVACE_RECORDER_BATCH_SIZE=1000 (from default)" in lines
    assert "VIVACE_DATABASE_URL= (from default)" in lines
    assert len(lines) == len(Settings.model_fields) + 1  # and the database in force
