"""``vivace block ls | inspect | delete`` through click's CliRunner, on every database backend."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner, Result
from pydantic import SecretStr

from vivace.blocks import Block, LocalFileSystem, RemoteFileSystem, S3Bucket, Secret
from vivace.blocks.store import list_blocks
from vivace.cli import cli

PLAIN = "cli-pl41n-secret"


class Pipeline(Block):
    """A user's own block type."""

    owner: str
    webhook: SecretStr
    options: dict[str, Any] = {}


def vivace(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def seed() -> None:
    Secret(value=PLAIN).save("api-token")
    LocalFileSystem(basepath="/srv/data").save("local-data")
    S3Bucket(bucket_name="lake", aws_secret_access_key=PLAIN).save("lake")
    Pipeline(
        owner="data-team",
        webhook=PLAIN,
        options={"nested": {"key": SecretStr(PLAIN)}, "retries": 2},
    ).save("nightly")


def test_ls_with_no_blocks(database_url: str) -> None:
    result = vivace("block", "ls")

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "No blocks saved."


def test_ls_lists_every_block_by_name(database_url: str) -> None:
    seed()

    result = vivace("block", "ls")

    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == [
        "api-token",
        "lake",
        "local-data",
        "nightly",
    ]
    assert "test_cli_blocks" in result.output and "Pipeline" in result.output
    assert PLAIN not in result.output


def test_ls_filters_by_type_name_or_path(database_url: str) -> None:
    seed()

    by_name = vivace("block", "ls", "--type", "S3Bucket")
    by_path = vivace("block", "ls", "--type", "vivace.blocks.core:Secret")
    none = vivace("block", "ls", "--type", "GCSBucket")

    assert "lake" in by_name.output and "api-token" not in by_name.output
    assert "api-token" in by_path.output and "lake" not in by_path.output
    assert none.output.strip() == "No GCSBucket blocks saved."


def test_inspect_shows_fields_and_masks_every_secret(database_url: str) -> None:
    seed()

    result = vivace("block", "inspect", "nightly")

    assert result.exit_code == 0, result.output
    assert "test_cli_blocks:Pipeline" in result.output
    assert "data-team" in result.output
    assert '{"nested": {"key": "**********"}, "retries": 2}' in result.output
    assert result.output.count("**********") == 2
    assert PLAIN not in result.output


def test_inspect_of_builtin_blocks(database_url: str) -> None:
    seed()

    secret = vivace("block", "inspect", "api-token")
    bucket = vivace("block", "inspect", "lake")

    assert "vivace.blocks.core:Secret" in secret.output and "**********" in secret.output
    assert "lake" in bucket.output and "aws_secret_access_key" in bucket.output
    assert PLAIN not in secret.output + bucket.output


def test_inspect_needs_neither_the_class_nor_the_key(
    database_url: str, insert_block_row: Any
) -> None:
    insert_block_row(
        "orphan",
        "gone.module:Thing",
        {"host": "h", "password": {"__vivace_secret_str__": "gAAAA-not-decryptable"}},
    )

    result = vivace("block", "inspect", "orphan")

    assert result.exit_code == 0, result.output
    assert "gone.module:Thing" in result.output and "**********" in result.output
    assert "gAAAA" not in result.output


def test_inspect_of_an_unknown_block(database_url: str) -> None:
    result = vivace("block", "inspect", "nope")

    assert result.exit_code == 1
    assert result.output.strip() == "Error: block 'nope' not found; see `vivace block ls`"


def test_delete_with_yes(database_url: str) -> None:
    seed()

    result = vivace("block", "delete", "lake", "--yes")

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Deleted block 'lake'."
    assert [record.name for record in list_blocks(database_url)] == [
        "api-token",
        "local-data",
        "nightly",
    ]


def test_delete_asks_first(database_url: str) -> None:
    seed()

    declined = vivace("block", "delete", "nightly", input="n\n")
    assert declined.exit_code == 1
    assert "Delete the Pipeline block 'nightly'?" in declined.output
    assert "nightly" in [record.name for record in list_blocks(database_url)]

    confirmed = vivace("block", "delete", "nightly", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "nightly" not in [record.name for record in list_blocks(database_url)]


def test_delete_of_an_unknown_block(database_url: str) -> None:
    result = vivace("block", "delete", "nope", "--yes")

    assert result.exit_code == 1
    assert "block 'nope' not found" in result.output


def test_a_remote_filesystem_settings_secret_is_masked(database_url: str) -> None:
    RemoteFileSystem(
        basepath="memory://x", settings={"key": "id-123", "secret": SecretStr(PLAIN)}
    ).save("remote")

    result = vivace("block", "inspect", "remote")

    assert '{"key": "id-123", "secret": "**********"}' in result.output
    assert PLAIN not in result.output
