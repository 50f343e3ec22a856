"""``Flow.deploy``: the project uploaded as it is on disk, the deployment recorded for a worker."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vivace import flow
from vivace.deployments.deploy import load_entrypoint
from vivace.deployments.runs import create_run
from vivace.deployments.storage import describe_storage, fetch_project
from vivace.exceptions import DeploymentError
from vivace.infrastructure.base import resolve_infrastructure
from vivace.results.resume import load_flow
from vivace.store.deployments import read_deployment, read_deployment_version, read_deployments
from vivace.store.work_queues import read_work_queue

FilesUnder = Callable[[Path], dict[str, str]]


def test_deploy_uploads_the_project_and_records_what_a_worker_needs(
    database_url: str,
    project: Path,
    vivace_home: Path,
    tmp_path: Path,
    project_files: dict[str, str],
    files_under: FilesUnder,
) -> None:
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    record = etl.deploy(
        "nightly",
        work_queue="etl-queue",
        parameters={"label": "weekly"},
        tags=["etl", "nightly"],
        description="loads a day",
    )

    assert (record.name, record.version, record.flow_name) == ("nightly", 1, "etl")
    assert record.entrypoint == "flows/etl.py:etl"
    assert record.parameters == {"label": "weekly"}
    assert record.parameter_schema["required"] == ["day"]
    assert set(record.parameter_schema["properties"]) == {"day", "label"}
    assert record.parameter_schema["additionalProperties"] is False
    assert record.infrastructure == resolve_infrastructure("process").to_record()
    assert record.infrastructure["type"] == "process"
    assert (record.work_queue_name, record.tags, record.description) == (
        "etl-queue",
        ("etl", "nightly"),
        "loads a day",
    )
    assert read_work_queue(database_url, "etl-queue") is not None
    uploaded = Path(record.storage["url"])
    assert uploaded.parent.parent == vivace_home / "deployments"
    assert uploaded.parent.name == "nightly"
    assert files_under(uploaded) == project_files
    assert fetch_project(record.storage, tmp_path / "fetched") == len(project_files)
    assert files_under(tmp_path / "fetched") == project_files


def test_the_fetched_entrypoint_loads_the_flow_it_was_deployed_from(
    database_url: str, project: Path, tmp_path: Path
) -> None:
    renamed = load_entrypoint(f"{project}/flows/etl.py:renamed")

    record = renamed.deploy("renamed")
    fetch_project(record.storage, tmp_path / "run")
    path, _, name = record.entrypoint.partition(":")
    loaded = load_flow(f"{tmp_path / 'run' / path}:{name}", record.flow_name)

    assert (record.entrypoint, record.flow_name) == ("flows/etl.py:_body", "renamed-flow")
    assert loaded.name == "renamed-flow"
    assert loaded(n=4) == 4


def test_redeploy_makes_a_new_version_and_keeps_the_old_code(
    database_url: str, project: Path, project_files: dict[str, str], files_under: FilesUnder
) -> None:
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")
    first = etl.deploy("nightly")
    run, _ = create_run(database_url, "nightly", {"day": 1})
    (project / "flows" / "etl_helpers.py").write_text("def double(value):\n    return 3 * value\n")

    second = etl.deploy("nightly", parameters={"day": 7})

    assert (second.id, second.version) == (first.id, 2)
    assert second.storage != first.storage
    assert run.deployment_version == 1
    old = read_deployment_version(database_url, first.id, 1)
    assert old is not None and old.storage == first.storage and old.parameters == {}
    assert files_under(Path(first.storage["url"])) == project_files
    assert "3 * value" in files_under(Path(second.storage["url"]))["flows/etl_helpers.py"]
    assert [d.version for d in read_deployments(database_url)] == [2]


def test_deploy_to_s3(
    database_url: str,
    project: Path,
    moto_server: str,
    tmp_path: Path,
    project_files: dict[str, str],
    files_under: FilesUnder,
) -> None:
    import boto3

    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket="deploy-bucket")
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    record = etl.deploy("on-s3", storage="s3://deploy-bucket/flows")

    assert record.storage["url"].startswith("s3://deploy-bucket/flows/on-s3/")
    assert fetch_project(record.storage, tmp_path / "fetched") == len(project_files)
    assert files_under(tmp_path / "fetched") == project_files


def test_a_failed_upload_records_nothing(database_url: str, project: Path) -> None:
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")
    not_a_folder = project / "README.md"

    with pytest.raises(DeploymentError, match=r"cannot upload the project folder .*README.md"):
        etl.deploy("lost", storage=str(not_a_folder))

    assert read_deployment(database_url, "lost") is None


def test_storage_by_block_name_and_folder(
    database_url: str,
    project: Path,
    tmp_path: Path,
    project_files: dict[str, str],
    files_under: FilesUnder,
) -> None:
    from vivace.blocks.filesystems import LocalFileSystem

    LocalFileSystem(basepath=str(tmp_path / "by-block")).save("code-store")
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    by_name = etl.deploy("by-name", storage="code-store")
    by_prefix = etl.deploy("by-prefix", storage="block:code-store")
    by_folder = etl.deploy("by-folder", storage=str(tmp_path / "folder"))

    assert by_name.storage["block"] == by_prefix.storage["block"] == "code-store"
    assert files_under(tmp_path / "by-block" / by_name.storage["path"]) == project_files
    assert Path(by_folder.storage["url"]).parent == tmp_path / "folder" / "by-folder"


def _git(*arguments: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_a_github_repository_is_the_code_nothing_is_uploaded_its_commit_is_pinned(
    database_url: str,
    tmp_path: Path,
    vivace_home: Path,
    project_files: dict[str, str],
    files_under: FilesUnder,
    write_files: Callable[[Path, dict[str, str]], None],
) -> None:
    from vivace.blocks.git import GitHubRepository

    bare, checkout = tmp_path / "flows.git", tmp_path / "checkout"
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    _git("init", "--quiet", "--initial-branch=main", str(checkout))
    write_files(checkout / "pipelines", {k: v for k, v in project_files.items() if "flows/" in k})
    _git("add", ".", cwd=checkout)
    _git("commit", "--quiet", "-m", "flows", cwd=checkout)
    _git("push", "--quiet", bare.as_uri(), "main", cwd=checkout)
    GitHubRepository(repository_url=bare.as_uri(), reference="main").save("repo")
    etl = load_entrypoint(f"{checkout}/pipelines/flows/etl.py:etl")

    record = etl.deploy("from-git", storage="block:repo")
    deployed = _git("rev-parse", "HEAD", cwd=checkout)
    (checkout / "pipelines" / "flows" / "etl.py").write_text("# the branch moved on\n")
    _git("commit", "--quiet", "-am", "later", cwd=checkout)
    _git("push", "--quiet", bare.as_uri(), "main", cwd=checkout)

    assert record.storage == {"block": "repo", "path": "", "commit": deployed}
    assert record.entrypoint == "pipelines/flows/etl.py:etl"
    assert not (vivace_home / "deployments").exists()
    fetch_project(record.storage, tmp_path / "fetched")
    assert (
        files_under(tmp_path / "fetched")["pipelines/flows/etl.py"] == project_files["flows/etl.py"]
    )
    assert describe_storage(record.storage) == f"block repo at commit {deployed[:12]}"
    redeployed = etl.deploy("from-git", storage="block:repo")
    assert redeployed.storage["commit"] == _git("rev-parse", "HEAD", cwd=checkout) != deployed

    (checkout / "pipelines" / "late.py").write_text(
        "from vivace import flow\n\n@flow\ndef late() -> None:\n    pass\n"
    )
    with pytest.raises(DeploymentError, match=r"'pipelines/late.py' cannot be read .* push it"):
        load_entrypoint(f"{checkout}/pipelines/late.py:late").deploy("late", storage="repo")
    assert read_deployment(database_url, "late") is None


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        pytest.param({"day": "monday"}, r"'day': 'monday' is not of type 'integer'", id="type"),
        pytest.param({"hour": 3}, r"'hour' was unexpected", id="unknown-name"),
        pytest.param({"day": object()}, r"'day' is a object, which has no JSON", id="not-json"),
    ],
)
def test_bad_default_parameters_are_refused(
    database_url: str, project: Path, parameters: dict[str, Any], message: str
) -> None:
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    with pytest.raises(DeploymentError, match=message):
        etl.deploy("bad", parameters=parameters)

    assert read_deployments(database_url) == []


def test_a_flow_that_cannot_be_imported_again_is_refused(
    database_url: str, project: Path, tmp_path: Path
) -> None:
    @flow
    def local() -> None:
        pass

    with pytest.raises(DeploymentError, match="defined inside a function"):
        local.deploy("local")
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DeploymentError, match="outside the project folder"):
        etl.deploy("outside", project_dir=tmp_path / "elsewhere")
    (project / ".vivaceignore").write_text("flows/\n")
    with pytest.raises(DeploymentError, match=r"'flows/etl\.py', which is not uploaded"):
        etl.deploy("ignored")
    scope: dict[str, Any] = {}
    exec("from vivace import flow\n@flow\ndef typed_in() -> None:\n    pass\n", scope)
    with pytest.raises(DeploymentError, match="not defined in a file"):
        scope["typed_in"].deploy("typed-in")


def test_the_project_folder_is_found_from_the_flow_file(
    database_url: str,
    tmp_path: Path,
    project_files: dict[str, str],
    write_files: Callable[[Path, dict[str, str]], None],
) -> None:
    files = {"pyproject.toml": "[project]\n", "src/jobs/job.py": project_files["flows/etl.py"]}
    write_files(tmp_path / "repo", {**files, "src/jobs/etl_helpers.py": "double = abs\n"})
    job = load_entrypoint(f"{tmp_path}/repo/src/jobs/job.py:etl")

    found = job.deploy("found")
    given = job.deploy("given", project_dir=tmp_path / "repo" / "src")

    assert found.entrypoint == "src/jobs/job.py:etl"
    assert given.entrypoint == "jobs/job.py:etl"


def test_bad_names_and_queues_are_refused(database_url: str, project: Path) -> None:
    from vivace.exceptions import ConfigurationError

    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    with pytest.raises(DeploymentError, match="deployment name must be non-empty text"):
        etl.deploy(" ")
    with pytest.raises(DeploymentError, match="is a UUID"):
        etl.deploy("0196f5d2-0000-7000-8000-000000000000")
    with pytest.raises(ConfigurationError, match="work queue name"):
        etl.deploy("q", work_queue="x" * 300)
    with pytest.raises(ConfigurationError, match="infrastructure type 'nope' is not known"):
        etl.deploy("i", infrastructure="nope")
    assert read_deployments(database_url) == []


def test_a_flow_file_directly_in_the_home_folder_is_not_a_project(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    project_files: dict[str, str],
    write_files: Callable[[Path, dict[str, str]], None],
) -> None:
    home = tmp_path / "home"
    write_files(home, {"etl.py": project_files["flows/etl.py"], "etl_helpers.py": "double = abs\n"})
    write_files(home, {".ssh/id_ed25519": "a key\n", "jobs/.keep": ""})
    monkeypatch.setenv("HOME", str(home))
    etl = load_entrypoint(f"{home}/etl.py:etl")

    with pytest.raises(DeploymentError, match=r"lies directly in .*home.*give project_dir="):
        etl.deploy("from-home")

    assert read_deployments(database_url) == []
    given = etl.deploy("from-home", project_dir=home)  # said plainly: the user's choice
    assert given.entrypoint == "etl.py:etl"


def test_a_failed_save_removes_what_was_uploaded(
    database_url: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vivace.blocks.filesystems import LocalFileSystem
    from vivace.exceptions import StoreError

    LocalFileSystem(basepath=str(tmp_path / "by-block")).save("code-store")
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise StoreError("the database went away")

    monkeypatch.setattr("vivace.store.deployments.save_deployment", unavailable)
    for storage in (str(tmp_path / "by-url"), "block:code-store"):
        with pytest.raises(StoreError, match="went away"):
            etl.deploy("lost", storage=storage)

    assert list((tmp_path / "by-url" / "lost").iterdir()) == []
    assert list((tmp_path / "by-block" / "lost").iterdir()) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            "def job(day: int, /) -> int:\n    return day\n",
            r"takes the positional-only parameter 'day'",
            id="positional-only",
        ),
        pytest.param(
            "def job(*days: int) -> int:\n    return len(days)\n",
            r"takes \*days, which a deployment's run cannot give",
            id="var-positional",
        ),
    ],
)
def test_a_flow_a_run_cannot_call_by_name_is_refused(
    database_url: str, project: Path, source: str, message: str
) -> None:
    (project / "flows" / "odd.py").write_text(f"from vivace import flow\n\n@flow\n{source}")

    with pytest.raises(DeploymentError, match=message):
        load_entrypoint(f"{project}/flows/odd.py:job").deploy("odd")

    assert read_deployments(database_url) == []


@pytest.mark.parametrize("name", ["team/versions", "team/nightly/flow-runs"])
def test_a_name_the_api_would_read_as_a_path_below_a_deployment_is_refused(
    database_url: str, project: Path, name: str
) -> None:
    etl = load_entrypoint(f"{project}/flows/etl.py:etl")

    with pytest.raises(DeploymentError, match="which the API reads as the path"):
        etl.deploy(name)

    assert etl.deploy("versions").name == "versions"  # the name alone is no path below one


def test_storage_credentials_are_never_shown(tmp_path: Path) -> None:
    from vivace.deployments.storage import redact_credentials, shown_storage

    record = {"url": "smb://me:hunter2@files.example.com/share/flows/nightly/0001"}

    assert (
        describe_storage(record) == "smb://me:**********@files.example.com/share/flows/nightly/0001"
    )
    assert shown_storage(record) == {"url": describe_storage(record)}
    assert redact_credentials("s3://AKIA:se/cr+et@bucket/x failed; s3://AKIA@b/y; /a:b@c") == (
        "s3://AKIA:**********@bucket/x failed; s3://AKIA@b/y; /a:b@c"
    )
    with pytest.raises(DeploymentError) as error:
        fetch_project(record, tmp_path / "fetched")
    assert "hunter2" not in str(error.value)
    assert "smb://me:**********@files.example.com" in str(error.value)
