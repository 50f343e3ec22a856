"""Fixtures for the deployment tests: a real project folder on disk.

- ``project``: a temporary project with a flow module (``flows/etl.py``, flow ``etl``) that imports
  a sibling helper module, a ``.vivaceignore``, and files that it and the defaults ignore (a
  ``.env`` of secrets among them).
- ``project_files``: what an upload of that project must hold, exactly (path -> text).
- ``files_under``: a function, every file below a folder as relative POSIX path -> text.
- ``write_files``: a function writing {relative path: text} below a folder.
- ``deployment``: the project's flow ``etl`` deployed as ``nightly`` on ``database_url``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from vivace.store.deployments import DeploymentRecord

FLOW_MODULE = textwrap.dedent(
    """
    from etl_helpers import double

    from vivace import flow, get_run_logger, task


    @task
    def add(x: int, y: int) -> int:
        return x + y


    @flow(name="etl")
    def etl(day: int, label: str = "daily") -> int:
        get_run_logger().info("loading day %s (%s)", day, label)
        return double(add(day, 1))


    def _body(n: int = 1) -> int:
        return n


    renamed = flow(name="renamed-flow")(_body)
    """
)
HELPER_MODULE = "def double(value: int) -> int:\n    return 2 * value\n"
IGNORE_FILE = "# not uploaded\n*.log\nscratch/\n"
PROJECT_FILES = {
    ".vivaceignore": IGNORE_FILE,
    "flows/etl.py": FLOW_MODULE,
    "flows/etl_helpers.py": HELPER_MODULE,
    "README.md": "the etl project\n",
}


def _write_files(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _files_under(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder: ``PROJECT_FILES`` plus files its .vivaceignore and the defaults skip."""
    root = tmp_path / "project"
    _write_files(root, PROJECT_FILES)
    _write_files(
        root,
        {
            "run.log": "ignored\n",
            "scratch/notes.txt": "ignored\n",
            "flows/__pycache__/old.cpython-39.pyc": "ignored\n",
            ".env": "API_TOKEN=never-uploaded\n",
        },
    )
    return root


@pytest.fixture
def project_files() -> dict[str, str]:
    return dict(PROJECT_FILES)


@pytest.fixture
def files_under() -> Callable[[Path], dict[str, str]]:
    return _files_under


@pytest.fixture
def write_files() -> Callable[[Path, dict[str, str]], None]:
    return _write_files


@pytest.fixture
def deployment(database_url: str, project: Path) -> DeploymentRecord:
    """The project's flow ``etl`` deployed as ``nightly`` (``day`` is required by each run)."""
    from vivace.deployments.deploy import load_entrypoint

    return load_entrypoint(f"{project}/flows/etl.py:etl").deploy("nightly", tags=["etl"])
