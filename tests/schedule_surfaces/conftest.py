"""Fixtures for the tests of the schedules' surfaces (deploy, vivace.yaml, CLI, API, UI).

- ``project``: a temporary project folder (``pyproject.toml`` marks it) with ``flows/etl.py``,
  whose flow ``etl`` takes a required ``day: int`` and ``label: str = "daily"``.
- ``etl``: that flow, loaded from the project as a worker would.
- ``api``: a ``TestClient`` of a server over the test's ``database_url`` (as tests/server's).
- ``sqlite_url``: the default database of the test's ``VIVACE_HOME``, for tests of input that is
  refused before the database is used (they need not run on both backends).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

FLOW_MODULE = textwrap.dedent(
    """
    from vivace import flow


    @flow(name="etl")
    def etl(day: int, label: str = "daily") -> int:
        return day
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "flows").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'etl'\n")
    (root / "flows" / "etl.py").write_text(FLOW_MODULE)
    return root


@pytest.fixture
def etl(project: Path) -> Any:
    from vivace.deployments.deploy import load_entrypoint

    return load_entrypoint(f"{project}/flows/etl.py:etl")


@pytest.fixture
def sqlite_url() -> str:
    from vivace.settings import get_settings

    url = get_settings().resolved_database_url
    assert url.startswith("sqlite:///")
    return url
