"""``vivace deploy``: from a file and from vivace.yaml, through click's CliRunner."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vivace.cli import cli
from vivace.store.deployments import read_deployment, read_deployment_version, read_deployments


def vivace(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_deploy_a_file(
    database_url: str, project: Path, monkeypatch: pytest.MonkeyPatch, vivace_home: Path
) -> None:
    monkeypatch.chdir(project)

    result = vivace(
        "deploy", "flows/etl.py:etl", "--name", "nightly", "--queue", "etl-q",
        "--param", "label=1.0", "--tag", "etl", "--description", "loads a day",
    )  # fmt: skip
    again = vivace("deploy", "flows/etl.py:etl", "--name", "nightly")

    assert result.exit_code == 0, result.output
    assert "Deployed 'nightly' (flow 'etl'), version 1." in result.output
    assert f"storage:        {vivace_home / 'deployments' / 'nightly'}/" in result.output
    assert "work queue:     etl-q" in result.output
    assert "Run it with: vivace deployment run nightly --param day=VALUE" in result.output
    assert "(a worker serving it: vivace worker start --queue etl-q)" in result.output
    assert again.exit_code == 0, again.output
    assert "version 2." in again.output
    record = read_deployment(database_url, "nightly")
    assert record is not None
    assert (record.entrypoint, record.flow_name, record.version) == ("flows/etl.py:etl", "etl", 2)
    assert (record.parameters, record.tags, record.work_queue_name) == ({}, (), "default")
    first = read_deployment_version(database_url, record.id, 1)
    assert first is not None and first.parameters == {"label": "1.0"}  # label is a str


def test_deploying_to_other_infrastructure_names_the_worker_type_that_serves_it(
    database_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)

    result = vivace("deploy", "flows/etl.py:etl", "--name", "boxed", "--infra", "docker")

    assert result.exit_code == 0, result.output
    assert "(a worker serving it: vivace worker start --queue default --type docker)" in (
        result.output
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["flows/etl.py:etl"], 2, "--name is required", id="no-name"),
        pytest.param(["flows/etl.py", "-n", "x"], 1, "is not FILE.py:NAME", id="no-flow-name"),
        pytest.param(["flows/nope.py:etl", "-n", "x"], 1, "there is no file", id="no-file"),
        pytest.param(["flows/etl.py:add", "-n", "x"], 1, "which is not a flow", id="a-task"),
        pytest.param(["flows/etl.py:etl", "-n", "x", "-p", "day"], 2, "is not NAME=VALUE", id="p"),
        pytest.param(
            ["flows/etl.py:etl", "-n", "x", "-p", "day=x"], 1, "'x' is not of type", id="param"
        ),
        pytest.param(
            ["flows/etl.py:etl", "-n", "x", "--infra", "vm"], 2, "type 'vm' is not known", id="i"
        ),
        pytest.param(["flows/etl.py:etl", "-n", "x", "--all"], 2, "not both", id="both"),
        pytest.param([], 2, "give FILE.py:FLOW --name NAME, or --all", id="nothing"),
        pytest.param(["--all"], 1, "no vivace.yaml in", id="no-yaml"),
    ],
)
def test_deploy_errors_are_one_line(
    database_url: str,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(project)

    result = vivace("deploy", *args)

    assert result.exit_code == code, result.output
    assert message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert read_deployments(database_url) == []


PROJECT_FILE = textwrap.dedent(
    """
    deployments:
      - name: nightly-etl
        entrypoint: flows/etl.py:etl
        work_queue: nightly
        parameters: {day: 1}
        tags: [etl]
        description: every night
        storage: code-store
        infrastructure: {type: process, env: {MODE: night}}
      - name: renamed
        entrypoint: flows/etl.py:renamed
    """
)


def test_deploy_all_from_vivace_yaml(
    database_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "vivace.yaml").write_text(PROJECT_FILE)
    monkeypatch.chdir(project / "flows")  # found in a folder above

    result = vivace("deploy", "--all")

    assert result.exit_code == 0, result.output
    assert "Deployed 'nightly-etl' (flow 'etl'), version 1." in result.output
    assert "Deployed 'renamed' (flow 'renamed-flow'), version 1." in result.output
    nightly, renamed = read_deployments(database_url)
    assert (nightly.entrypoint, renamed.entrypoint) == ("flows/etl.py:etl", "flows/etl.py:_body")
    assert (nightly.parameters, nightly.tags, nightly.work_queue_name) == (
        {"day": 1},
        ("etl",),
        "nightly",
    )
    assert nightly.description == "every night"
    assert nightly.infrastructure["env"] == {"MODE": "night"}
    inspected = vivace("deployment", "inspect", "nightly-etl").output
    assert '"env": {"MODE": "**********"}' in inspected and 'night"' not in inspected
    assert Path(nightly.storage["url"]).parent == project / "code-store" / "nightly-etl"
    assert (project / "code-store" / "nightly-etl").is_dir()


def test_deploy_one_entry_with_overrides(
    database_url: str, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (project / "vivace.yaml").write_text(PROJECT_FILE)
    monkeypatch.chdir(tmp_path)

    result = vivace(
        "deploy", "--name", "nightly-etl", "--file", str(project / "vivace.yaml"),
        "--param", "label=1.0", "--queue", "other", "--storage", "elsewhere",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    [record] = read_deployments(database_url)
    assert (record.name, record.parameters, record.work_queue_name) == (
        "nightly-etl",
        {"day": 1, "label": "1.0"},
        "other",
    )
    assert Path(record.storage["url"]).parent == tmp_path / "elsewhere" / "nightly-etl"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            PROJECT_FILE.replace("work_queue:", "work_qeue:"),
            "deployment 'nightly-etl' (entry 1): key 'work_qeue' is unknown",
            id="unknown-key",
        ),
        pytest.param(
            PROJECT_FILE.replace("tags: [etl]", "tags: etl"),
            "deployment 'nightly-etl' (entry 1): key 'tags': Input should be a valid list",
            id="bad-value",
        ),
        pytest.param(
            PROJECT_FILE + "    infrastructure: [1]\n",
            "deployment 'renamed' (entry 2): key 'infrastructure': expected a type name",
            id="bad-infrastructure",
        ),
        pytest.param(
            PROJECT_FILE.replace("flows/etl.py:renamed", "flows/etl.py"),
            "deployment 'renamed' (entry 2): key 'entrypoint': 'flows/etl.py' is not FILE.py",
            id="bad-entrypoint",
        ),
        pytest.param(
            PROJECT_FILE.replace("name: renamed", "name: nightly-etl"),
            "deployment 'nightly-etl' is listed twice",
            id="twice",
        ),
        pytest.param(
            PROJECT_FILE.replace("{day: 1}", "{day: one}"),
            "deployment 'nightly-etl': default parameters do not match",
            id="bad-parameter",
        ),
        pytest.param(
            PROJECT_FILE.replace("{MODE: night}", "{MODE: night}, cpu: 2"),
            "deployment 'nightly-etl': infrastructure is not valid: cpu: Extra inputs",
            id="bad-infrastructure-field",
        ),
        pytest.param(
            PROJECT_FILE.replace("flows/etl.py:renamed", "flows/gone.py:renamed"),
            "deployment 'renamed': entrypoint",
            id="missing-file",
        ),
        pytest.param("deployments:\n  - {name: [x\n", "is not valid YAML (line 3)", id="not-yaml"),
        pytest.param("- 1\n", "must be a mapping with a 'deployments' list", id="a-list"),
    ],
)
def test_a_bad_vivace_yaml_deploys_nothing(
    database_url: str,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    message: str,
) -> None:
    (project / "vivace.yaml").write_text(text)
    monkeypatch.chdir(project)

    result = vivace("deploy", "--all")

    assert result.exit_code == 1, result.output
    assert message in result.output
    assert result.output.count("\n") == 1
    assert read_deployments(database_url) == []
    assert not (project / "code-store").exists()


def test_deploy_an_entry_that_is_not_there(
    database_url: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "vivace.yaml").write_text(PROJECT_FILE)
    monkeypatch.chdir(project)

    result = vivace("deploy", "--name", "weekly")

    assert result.exit_code == 1
    assert "has no deployment named 'weekly'; it has 'nightly-etl', 'renamed'" in result.output
