"""The set-up scripts exist, are executable, parse, and are the ones the README names."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["scripts/test", "scripts/demo", ".ci/run"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_executable_and_parses(name: str) -> None:
    path = ROOT / name
    assert path.is_file(), f"{name} is missing"
    assert os.access(path, os.X_OK), f"{name} is not executable"
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"bash -n {name}: {result.stderr}"


def test_readme_lists_both_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "./scripts/demo" in readme
    assert "./scripts/test" in readme


def test_skip_lint_knob_is_documented_in_the_test_script() -> None:
    header = (ROOT / "scripts/test").read_text(encoding="utf-8").split("set -euo pipefail")[0]
    assert "VIVACE_TEST_SKIP_LINT" in header
