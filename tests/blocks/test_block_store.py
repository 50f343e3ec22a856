"""Saving, loading, overwriting and deleting blocks, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from vivace.blocks import Block, LocalFileSystem, RemoteFileSystem, Secret
from vivace.blocks.store import list_blocks, read_block
from vivace.exceptions import (
    BlockExistsError,
    BlockNotFoundError,
    BlockTypeError,
    ConfigurationError,
)


class Endpoint(BaseModel):
    host: str
    port: int = 5432


class Warehouse(Block):
    """A user's own block type, defined at module level (importable by its path)."""

    endpoint: Endpoint
    schemas: list[str] = []
    options: dict[str, Any] = {}
    folder: Path | None = None


class PremiumWarehouse(Warehouse):
    tier: str = "gold"


def make_warehouse() -> Warehouse:
    return Warehouse(
        endpoint=Endpoint(host="db.internal"),
        schemas=["raw", "marts"],
        options={"timeout": 30, "labels": {"team": "data"}},
        folder=Path("/srv/warehouse"),
    )


def test_a_user_block_round_trips_through_the_database(database_url: str) -> None:
    original = make_warehouse()
    block_id = original.save("warehouse")

    loaded = Warehouse.load("warehouse")

    assert loaded == original
    assert isinstance(loaded.endpoint, Endpoint)
    assert loaded.folder == Path("/srv/warehouse")
    record = read_block(database_url, "warehouse")
    assert record is not None
    assert record.id == block_id
    assert record.block_type == "test_block_store:Warehouse"
    assert record.data["endpoint"] == {"host": "db.internal", "port": 5432}


def test_block_load_on_the_base_class_rebuilds_the_stored_type(database_url: str) -> None:
    make_warehouse().save("warehouse")
    Secret(value="hunter2").save("password")
    LocalFileSystem(basepath="/data").save("local")

    assert type(Block.load("warehouse")) is Warehouse
    assert type(Block.load("password")) is Secret
    assert Block.load("local") == LocalFileSystem(basepath="/data")


def test_loading_as_a_parent_class_gives_the_stored_subclass(database_url: str) -> None:
    PremiumWarehouse(endpoint=Endpoint(host="h"), tier="platinum").save("premium")

    loaded = Warehouse.load("premium")

    assert type(loaded) is PremiumWarehouse
    assert loaded.tier == "platinum"


def test_a_class_defined_inside_a_function_loads_in_the_same_process(database_url: str) -> None:
    class Local(Block):
        level: int

    Local(level=3).save("local-class")

    assert Block.load("local-class") == Local(level=3)
    record = read_block(database_url, "local-class")
    assert record is not None
    assert record.block_type.endswith(
        ":test_a_class_defined_inside_a_function_loads_in_the_same_process.<locals>.Local"
    )


def test_saving_a_taken_name_needs_overwrite(database_url: str) -> None:
    Secret(value="first").save("token")

    with pytest.raises(
        BlockExistsError, match=r"block named 'token' already exists.*overwrite=True"
    ):
        Secret(value="second").save("token")

    assert isinstance(BlockExistsError("x"), ValueError)
    assert Secret.load("token").get() == "first"


def test_overwrite_replaces_the_block_and_keeps_its_id(database_url: str) -> None:
    first_id = Secret(value="first").save("token")
    created = read_block(database_url, "token")

    second_id = Secret(value="second").save("token", overwrite=True)

    assert second_id == first_id
    assert Secret.load("token").get() == "second"
    updated = read_block(database_url, "token")
    assert created is not None and updated is not None
    assert updated.created == created.created
    assert updated.updated >= created.updated
    assert [record.name for record in list_blocks(database_url)] == ["token"]


def test_overwrite_may_change_the_type(database_url: str) -> None:
    Secret(value="x").save("thing")

    LocalFileSystem(basepath="/tmp").save("thing", overwrite=True)

    assert type(Block.load("thing")) is LocalFileSystem
    with pytest.raises(BlockTypeError, match="is a LocalFileSystem"):
        Secret.load("thing")


def test_two_savers_racing_for_a_new_name_one_wins(database_url: str) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def save(value: str) -> None:
        barrier.wait()
        try:
            Secret(value=value).save("contested")
            outcomes.append("saved")
        except BlockExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=save, args=(value,)) for value in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["exists", "saved"]
    assert Secret.load("contested").get() in {"a", "b"}


def test_loading_an_unknown_name_says_so(database_url: str) -> None:
    with pytest.raises(BlockNotFoundError, match="no block named 'missing' is saved") as raised:
        Secret.load("missing")
    assert isinstance(raised.value, ValueError)


def test_loading_as_an_unrelated_class_is_refused(database_url: str) -> None:
    make_warehouse().save("warehouse")

    with pytest.raises(BlockTypeError, match=r"block 'warehouse' is a Warehouse .*not a Secret"):
        Secret.load("warehouse")
    with pytest.raises(BlockTypeError, match="not a PremiumWarehouse"):
        PremiumWarehouse.load("warehouse")


def test_a_stored_type_that_cannot_be_imported_is_named(
    database_url: str, insert_block_row: Any
) -> None:
    insert_block_row("orphan", "vivace_no_such_module.blocks:Gone", {"x": 1})

    with pytest.raises(
        BlockTypeError,
        match=r"block 'orphan' has type 'vivace_no_such_module.blocks:Gone', which cannot be "
        r"imported \(ModuleNotFoundError",
    ):
        Block.load("orphan")


def test_a_stored_type_that_is_not_a_block_is_refused(
    database_url: str, insert_block_row: Any
) -> None:
    insert_block_row("impostor", "json:dumps", {})

    with pytest.raises(BlockTypeError, match="it is a function, not a Block subclass"):
        Block.load("impostor")


def test_stored_data_the_class_no_longer_accepts_is_a_clear_error(
    database_url: str, insert_block_row: Any
) -> None:
    insert_block_row("old", Secret.block_type_path, {"token": "renamed field"})

    with pytest.raises(BlockTypeError, match="block 'old' was saved with fields that Secret no"):
        Secret.load("old")


def test_delete_removes_the_block(database_url: str) -> None:
    Secret(value="x").save("token")
    make_warehouse().save("warehouse")

    Secret.delete("token")

    assert [record.name for record in list_blocks(database_url)] == ["warehouse"]
    with pytest.raises(BlockNotFoundError):
        Secret.load("token")
    with pytest.raises(BlockNotFoundError, match="no block named 'token'"):
        Block.delete("token")


def test_delete_through_another_type_is_refused_and_keeps_the_block(database_url: str) -> None:
    make_warehouse().save("warehouse")

    with pytest.raises(BlockTypeError, match="not a Secret"):
        Secret.delete("warehouse")

    Block.delete("warehouse")
    assert list_blocks(database_url) == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("has space", id="space"),
        pytest.param("-leading-dash", id="leading-dash"),
        pytest.param("a/b", id="slash"),
        pytest.param("x" * 256, id="too-long"),
    ],
)
def test_bad_names_are_refused_before_the_database(name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"block name .* is not valid; expected 1 to 255"):
        Secret(value="x").save(name)
    with pytest.raises(ConfigurationError, match="is not valid"):
        Secret.load(name)


def test_the_block_base_class_cannot_be_saved(database_url: str) -> None:
    with pytest.raises(BlockTypeError, match="Block itself has no fields"):
        Block().save("nothing")


def test_unknown_fields_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="basepth"):
        LocalFileSystem(basepath="/data", basepth="/typo")  # type: ignore[call-arg]


def test_the_stored_row_holds_the_type_path_and_json(database_url: str, block_rows: Any) -> None:
    RemoteFileSystem(basepath="memory://bucket", settings={"anon": True}).save("remote")

    block_type, data = block_rows()["remote"]

    assert block_type == "vivace.blocks.filesystems:RemoteFileSystem"
    assert json.loads(data) == {"basepath": "memory://bucket", "settings": {"anon": True}}


def test_importing_blocks_leaves_fsspec_cryptography_and_sqlalchemy_unloaded() -> None:
    code = (
        "import sys, vivace.blocks; "
        "print(sorted(m for m in ('fsspec', 'cryptography', 'sqlalchemy') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_block_ids_are_uuids(database_url: str) -> None:
    assert isinstance(Secret(value=SecretStr("x")).save("token"), uuid.UUID)
