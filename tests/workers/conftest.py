"""Fixtures of the worker tests (helpers: tests/workers/helpers.py).

- ``project``: a project folder in tmp_path with ``flows.py`` (a pipeline of tasks that logs, a
  long sleeper, async flows), to upload as a deployment's code.
- ``VIVACE_HEARTBEAT_INTERVAL`` is 0.3 s (autouse), so cancellations are noticed quickly; the
  subprocesses inherit it, with ``VIVACE_DATABASE_URL``, ``VIVACE_HOME`` and a ``TMPDIR`` in the
  test's folder.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.workers.helpers import FLOWS, HEARTBEAT
from vivace.settings import reset_settings


@pytest.fixture(autouse=True)
def run_environment(vivace_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_HEARTBEAT_INTERVAL", str(HEARTBEAT))
    # The engines' temporary code folders: in the test's folder (a killed one leaves its own).
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))
    reset_settings()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "flows.py").write_text(textwrap.dedent(FLOWS))
    return folder
