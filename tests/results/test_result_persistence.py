"""Persisted results: written to result storage, referenced in the store, read back anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from vivace import flow, task
from vivace.exceptions import ConfigurationError, ResultError
from vivace.results.serializers import resolve_serializer, serializer_named
from vivace.results.storage import (
    FsspecResultStorage,
    LocalResultStorage,
    resolve_storage,
    storage_from_location,
)
from vivace.runners import SequentialTaskRunner
from vivace.settings import reset_settings
from vivace.store.queries import read_flow_run, read_task_runs


def _task_records(url: str, flow_run_id: Any) -> dict[str, Any]:
    runs, _ = read_task_runs(url, flow_run_id)
    return {run.name: run for run in runs}


def test_a_persisted_result_is_referenced_in_the_store_and_loads_back(
    database_url: str, vivace_home: Path
) -> None:
    @task(persist_result=True)
    def build(n: int) -> dict[str, list[int]]:
        return {"squares": [i * i for i in range(n)]}

    @task
    def plain(n: int) -> int:
        return n

    @flow(task_runner=SequentialTaskRunner())
    def pipeline(n: int) -> int:
        build(n)
        return plain(n)

    state = pipeline(4, return_state=True)
    records = _task_records(database_url, state.run_id)

    built = records["build-0"]
    assert built.result_storage == str(vivace_home / "storage")
    assert built.result_key == built.id.hex
    assert built.result_serializer == "cloudpickle"
    assert (vivace_home / "storage" / built.result_key).is_file()
    assert built.state.result() == {"squares": [0, 1, 4, 9]}
    # Not persisted: the store says so when asked for the value.
    assert records["plain-0"].result_key is None
    with pytest.raises(ResultError, match="was not persisted"):
        records["plain-0"].state.result()


@pytest.mark.parametrize(
    "serializer",
    ["cloudpickle", "pickle", "json", "compressed/json", "compressed/cloudpickle"],
)
def test_every_serializer_round_trips(database_url: str, serializer: str) -> None:
    value = {"rows": [[1, "a"], [2, "b"]] * 50, "ok": True}

    @task(result_serializer=serializer)
    def produce() -> dict[str, Any]:
        return value

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> None:
        produce()

    state = pipeline(return_state=True)
    (record,) = _task_records(database_url, state.run_id).values()
    assert record.result_serializer == serializer
    assert record.state.result() == value


def test_json_results_are_plain_json_in_storage(tmp_path: Path) -> None:
    @task(result_storage=tmp_path / "results", result_serializer="json")
    def produce() -> list[int]:
        return [1, 2, 3]

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> Any:
        return produce(return_state=True)

    pipeline()
    (written,) = (tmp_path / "results").iterdir()
    assert json.loads(written.read_bytes()) == [1, 2, 3]


def test_fsspec_url_storage_and_a_flow_result(database_url: str) -> None:
    @task(persist_result=True, result_storage="memory://vivace-test/tasks")
    def produce(x: int) -> int:
        return x * 10

    @flow(
        task_runner=SequentialTaskRunner(),
        persist_result=True,
        result_storage="memory://vivace-test/flows",
        result_serializer="compressed/cloudpickle",
    )
    def pipeline(x: int) -> int:
        return produce(x) + 1

    state = pipeline(5, return_state=True)
    flow_record = read_flow_run(database_url, state.run_id)
    assert flow_record is not None
    assert flow_record.result_storage == "memory://vivace-test/flows"
    assert flow_record.result_serializer == "compressed/cloudpickle"
    assert flow_record.state.result() == 51
    (record,) = _task_records(database_url, state.run_id).values()
    assert record.result_storage == "memory://vivace-test/tasks"
    assert record.state.result() == 50


def test_persist_by_default_setting(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_RESULTS_PERSIST_BY_DEFAULT", "true")
    reset_settings()

    @task
    def kept() -> str:
        return "kept"

    @task(persist_result=False)
    def skipped() -> str:
        return "skipped"

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> str:
        kept()
        skipped()
        return "done"

    state = pipeline(return_state=True)
    records = _task_records(database_url, state.run_id)
    assert records["kept-0"].state.result() == "kept"
    assert records["skipped-0"].result_key is None
    flow_record = read_flow_run(database_url, state.run_id)
    assert flow_record is not None and flow_record.state.result() == "done"


def test_local_storage_path_setting(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIVACE_LOCAL_STORAGE_PATH", str(tmp_path / "elsewhere"))
    reset_settings()

    @task(persist_result=True)
    def produce() -> int:
        return 7

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> None:
        produce()

    state = pipeline(return_state=True)
    (record,) = _task_records(database_url, state.run_id).values()
    assert record.result_storage == str(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / record.result_key).is_file()


def test_a_result_that_cannot_be_serialized_is_a_warning_not_a_failure(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    @task(result_serializer="json")
    def produce() -> set[int]:
        return {1, 2}

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> set[int]:
        return produce()

    with caplog.at_level(logging.WARNING, logger="vivace.task_runs"):
        state = pipeline(return_state=True)
    assert state.result() == {1, 2}
    (record,) = _task_records(database_url, state.run_id).values()
    assert record.state_type.value == "COMPLETED" and record.result_key is None
    assert any("result not persisted" in r.getMessage() for r in caplog.records)


def test_a_result_gone_from_storage_is_a_clear_error(database_url: str, tmp_path: Path) -> None:
    @task(result_storage=tmp_path)
    def produce() -> int:
        return 1

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> None:
        produce()

    state = pipeline(return_state=True)
    (record,) = _task_records(database_url, state.run_id).values()
    (tmp_path / record.result_key).unlink()
    with pytest.raises(ResultError, match="no longer in its storage"):
        record.state.result()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"persist_result": "yes"}, "persist_result must be True", id="persist"),
        pytest.param({"result_serializer": "yaml"}, "unknown serializer 'yaml'", id="serializer"),
        pytest.param({"result_storage": 42}, "result_storage must be a folder", id="storage"),
        pytest.param(
            {"persist_result": False, "result_storage": "/tmp/x"},
            "mean nothing",
            id="contradiction",
        ),
    ],
)
def test_bad_result_options_fail_at_decoration(options: dict[str, Any], message: str) -> None:
    def fn() -> None:
        return None

    with pytest.raises(ConfigurationError, match=message):
        task(**options)(fn)
    with pytest.raises(ConfigurationError, match=message):
        flow(**options)(fn)


def test_storages_are_rebuilt_from_their_location(tmp_path: Path) -> None:
    local = resolve_storage(str(tmp_path))
    assert isinstance(local, LocalResultStorage)
    assert storage_from_location(local.location) == local
    assert isinstance(storage_from_location(f"file://{tmp_path}"), LocalResultStorage)
    remote = resolve_storage("memory://bucket/prefix")
    assert isinstance(remote, FsspecResultStorage)
    remote.write("k", b"data")
    assert storage_from_location(remote.location).read("k") == b"data"
    with pytest.raises(ResultError, match="not a plain name"):
        local.write("../escape", b"x")
    assert serializer_named("compressed/json").loads(
        resolve_serializer("compressed/json").dumps([1])
    ) == [1]


def test_a_saved_filesystem_block_as_result_storage(database_url: str, tmp_path: Path) -> None:
    from vivace.blocks import LocalFileSystem
    from vivace.results import persistence

    LocalFileSystem(basepath=str(tmp_path / "block-results")).save("results-here")

    @task(result_storage="block:results-here")
    def produce() -> str:
        return "in a block"

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> None:
        produce()

    state = pipeline(return_state=True)
    (record,) = _task_records(database_url, state.run_id).values()
    assert record.result_storage == "block:results-here"
    assert (tmp_path / "block-results" / record.result_key).is_file()
    persistence.forget_storages()  # read it as another process would: the block by its name
    assert record.state.result() == "in a block"


def test_an_unsaved_block_object_writes_but_cannot_be_found_later(
    database_url: str, tmp_path: Path
) -> None:
    from vivace.blocks import LocalFileSystem

    @task(result_storage=LocalFileSystem(basepath=str(tmp_path)))
    def produce() -> int:
        return 3

    @flow(task_runner=SequentialTaskRunner())
    def pipeline() -> None:
        produce()

    state = pipeline(return_state=True)
    (record,) = _task_records(database_url, state.run_id).values()
    assert (tmp_path / record.result_key).is_file()
    with pytest.raises(ResultError, match="without a saved name"):
        record.state.result()


def test_local_results_on_a_remote_cluster_warn_once_per_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from vivace.engine.context import FlowRunScope
    from vivace.engine.runs import FlowRun
    from vivace.engine.states import State, StateType
    from vivace.results.storage import is_remote_address, warn_if_local

    assert is_remote_address("tcp://10.1.2.3:8786") and is_remote_address("auto")
    assert not is_remote_address("tcp://127.0.0.1:8786") and not is_remote_address(None)
    assert not is_remote_address("localhost:6379")

    @task(persist_result=True)
    def local_result() -> int:
        return 1

    @task(persist_result=True, result_storage="memory://shared")
    def shared_result() -> int:
        return 1

    import uuid

    run = FlowRun(
        uuid.uuid4(), uuid.uuid4(), "f", "r", None, None, None, None, State(StateType.RUNNING)
    )
    scope = FlowRunScope(run, SequentialTaskRunner(), None, False)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="vivace.task_runs"):
        for _ in range(3):
            warn_if_local(local_result, scope)
            warn_if_local(shared_result, scope)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "'local_result'" in messages[0] and "s3://" in messages[0]
