"""The public API: the exact names users import, and an import that stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import vivace
import vivace.runners

PUBLIC_NAMES = [
    "Cron",
    "Flow",
    "Interval",
    "RRule",
    "State",
    "StateType",
    "Task",
    "VivaceFuture",
    "__version__",
    "as_completed",
    "concurrency",
    "flow",
    "get_run_logger",
    "resume_flow_run",
    "run_deployment",
    "task",
    "unmapped",
    "wait",
]

HEAVY_MODULES = [
    "dask",
    "distributed",
    "ray",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "pydantic",
    "alembic",
]


def test_all_is_exactly_the_public_names_sorted() -> None:
    assert vivace.__all__ == PUBLIC_NAMES
    assert vivace.__all__ == sorted(vivace.__all__)
    for name in vivace.__all__:
        assert getattr(vivace, name) is not None


def test_the_names_the_spec_promises_import() -> None:
    from vivace import (  # noqa: F401
        State,
        StateType,
        as_completed,
        flow,
        get_run_logger,
        task,
        unmapped,
        wait,
    )
    from vivace.runners import ConcurrentTaskRunner, SequentialTaskRunner  # noqa: F401


def test_runners_module_exports() -> None:
    assert sorted(vivace.runners.__all__) == [
        "ConcurrentTaskRunner",
        "DaskTaskRunner",
        "RayTaskRunner",
        "SequentialTaskRunner",
        "TaskRunner",
    ]


def test_import_vivace_loads_no_heavy_dependency() -> None:
    code = (
        "import json, sys\n"
        "import vivace, vivace.runners\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_decorating_loads_no_heavy_dependency() -> None:
    code = (
        "import json, sys\n"
        "from vivace import flow, task\n"
        "from vivace.runners import ConcurrentTaskRunner\n"
        "@task(retries=1)\n"
        "def t(x: int) -> int: return x\n"
        "@flow(task_runner=ConcurrentTaskRunner())\n"
        "def f(n: int) -> int: return t(n)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []
