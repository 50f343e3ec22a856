"""Caching: opt-in, deterministic keys, a hit ends COMPLETED ``Cached`` without running."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vivace import flow, task
from vivace.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CacheContext
from vivace.cli import cli
from vivace.exceptions import ConfigurationError
from vivace.results import cache_index
from vivace.results.hashing import UnhashableInputError, stable_digest
from vivace.runners import SequentialTaskRunner
from vivace.store.queries import read_task_runs


@dataclasses.dataclass
class Point:
    x: int
    y: float


def run_in_flow(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
    """Run ``fn`` (calling tasks) in a flow run; return its value and its task run records."""
    from vivace.settings import get_settings

    state = flow(name="cached", task_runner=SequentialTaskRunner())(fn)(
        *args, return_state=True, **kwargs
    )
    runs, _ = read_task_runs(get_settings().resolved_database_url, state.run_id)
    return state.result(), runs


def test_a_cache_hit_skips_the_task_in_a_later_flow_run(database_url: str) -> None:
    executed: list[int] = []

    @task(cache_policy=INPUTS)
    def slow_square(x: int) -> int:
        executed.append(x)
        return x * x

    first, first_runs = run_in_flow(lambda: slow_square(4))
    second, second_runs = run_in_flow(lambda: [slow_square(4), slow_square(5)])

    assert first == 16 and second == [16, 25]
    assert executed == [4, 5]  # 4 ran once
    (original,) = first_runs
    hit, miss = sorted(second_runs, key=lambda run: run.name)
    assert original.state_name == "Completed" and original.cache_key is not None
    assert hit.state_type.value == "COMPLETED" and hit.state_name == "Cached"
    assert hit.run_count == 0 and hit.start_time is None  # never ran
    assert hit.cache_key == original.cache_key
    assert str(original.id) in (hit.state_message or "")
    assert hit.state.result() == 16
    assert miss.state_name == "Completed" and miss.cache_key != original.cache_key


def test_a_direct_call_returns_the_cached_state(database_url: str) -> None:
    @task(cache_policy=INPUTS)
    def one() -> int:
        return 1

    run_in_flow(lambda: one())
    states: list[Any] = []
    run_in_flow(lambda: states.append(one(return_state=True)))
    (state,) = states
    assert state.name == "Cached" and state.is_completed() and state.result() == 1


def test_no_caching_without_a_policy(database_url: str) -> None:
    executed: list[int] = []

    @task(persist_result=True)
    def step() -> int:
        executed.append(1)
        return 1

    run_in_flow(lambda: step())
    _, runs = run_in_flow(lambda: step())
    assert len(executed) == 2 and runs[0].cache_key is None


def test_task_source_policy_ignores_inputs(database_url: str) -> None:
    executed: list[int] = []

    @task(cache_policy=TASK_SOURCE)
    def constant(x: int) -> int:
        executed.append(x)
        return x

    assert run_in_flow(lambda: constant(1))[0] == 1
    assert run_in_flow(lambda: constant(2))[0] == 1  # same source: the first result
    assert executed == [1]


def test_inputs_minus_a_parameter_and_compound_policies(database_url: str) -> None:
    executed: list[Any] = []

    @task(cache_policy=(INPUTS - "verbose") + TASK_SOURCE)
    def fetch(url: str, verbose: bool = False) -> str:
        executed.append((url, verbose))
        return url.upper()

    run_in_flow(lambda: fetch("a", verbose=True))
    run_in_flow(lambda: fetch("a", verbose=False))
    run_in_flow(lambda: fetch("b"))
    assert executed == [("a", True), ("b", False)]


def test_defaults_and_keywords_give_the_same_key(database_url: str) -> None:
    executed: list[Any] = []

    @task(cache_policy=INPUTS)
    def area(width: int, height: int = 2) -> int:
        executed.append(width)
        return width * height

    run_in_flow(lambda: area(3))
    run_in_flow(lambda: area(width=3, height=2))
    assert executed == [3]


def test_two_tasks_never_share_entries_of_builtin_policies(database_url: str) -> None:
    @task(cache_policy=INPUTS)
    def first(x: int) -> str:
        return "first"

    @task(cache_policy=INPUTS)
    def second(x: int) -> str:
        return "second"

    run_in_flow(lambda: first(1))
    assert run_in_flow(lambda: second(1))[0] == "second"


def test_cache_key_fn_owns_its_keys(database_url: str) -> None:
    seen: list[Any] = []

    def by_day(context: CacheContext, parameters: dict[str, Any]) -> str | None:
        seen.append((context.task.name, context.flow_run_id is not None))
        return None if parameters["day"] == "never" else f"report-{parameters['day']}"

    @task(cache_key_fn=by_day)
    def report(day: str) -> str:
        return f"report for {day} at {time.monotonic_ns()}"

    first, runs = run_in_flow(lambda: report("monday"))
    second, _ = run_in_flow(lambda: report("monday"))
    assert first == second and runs[0].cache_key == "report-monday"
    uncached_1, _ = run_in_flow(lambda: report("never"))
    uncached_2, runs = run_in_flow(lambda: report("never"))
    assert uncached_1 != uncached_2 and runs[0].cache_key is None
    assert seen[0] == ("report", True)


def test_a_long_key_of_cache_key_fn_is_stored_as_its_digest(database_url: str) -> None:
    executed: list[str] = []
    long_key = "report-" + "x" * 300  # PostgreSQL's key column holds 255 characters

    @task(cache_key_fn=lambda context, parameters: long_key)
    def report() -> str:
        executed.append("ran")
        return "report"

    run_in_flow(lambda: report())
    _, runs = run_in_flow(lambda: report())
    assert executed == ["ran"] and runs[0].state_name == "Cached"
    (entry,) = cache_index.read_entries(database_url)
    assert entry.key == runs[0].cache_key and entry.key.startswith("sha256:")
    assert len(entry.key) <= 255


def test_no_cache_in_with_options_switches_caching_off(database_url: str) -> None:
    executed: list[int] = []

    @task(cache_policy=INPUTS, cache_expiration=60, refresh_cache=True)
    def fetch(x: int) -> int:
        executed.append(x)
        return x

    uncached = fetch.with_options(cache_policy=NO_CACHE)
    assert uncached.results is not None and uncached.results.cache is None
    run_in_flow(lambda: uncached(1))
    run_in_flow(lambda: uncached(1))
    assert executed == [1, 1] and cache_index.read_entries(database_url) == []


def test_source_digests_of_code_without_source_are_the_same_in_every_process() -> None:
    code = (
        "import sys\n"
        "from vivace.cache_policies import source_digest\n"
        "namespace = {}\n"
        "exec(compile('def f(x):\\n"
        "    def inner(y):\\n"
        '        return y in {"alpha", "beta", "gamma", "delta"}\\n'
        "    return inner(x)\\n', '<no source>', 'exec'), namespace)\n"
        "print(source_digest(namespace['f']))\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64


def test_expired_entries_miss(database_url: str) -> None:
    executed: list[int] = []

    @task(cache_policy=INPUTS, cache_expiration=dt.timedelta(seconds=60))
    def fresh(x: int) -> int:
        executed.append(x)
        return x

    _, runs = run_in_flow(lambda: fresh(1))
    key = runs[0].cache_key
    assert cache_index.lookup(database_url, key) is not None
    assert cache_index.lookup(database_url, key, now=time.time() + 120) is None
    (entry,) = cache_index.read_entries(database_url)
    assert entry.expires is not None
    assert 55 < (entry.expires - entry.created).total_seconds() <= 60.5


def test_refresh_cache_runs_and_replaces_the_entry(database_url: str) -> None:
    counter = iter(range(100))

    @task(cache_policy=INPUTS)
    def tick(x: int) -> int:
        return next(counter)

    assert run_in_flow(lambda: tick(0))[0] == 0
    assert run_in_flow(lambda: tick.with_options(refresh_cache=True)(0))[0] == 1
    assert run_in_flow(lambda: tick(0))[0] == 1


def test_an_unhashable_input_warns_and_runs_uncached(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    executed: list[int] = []

    class Opaque:
        pass

    @task(cache_policy=INPUTS)
    def use(thing: Any) -> int:
        executed.append(1)
        return 1

    with caplog.at_level(logging.WARNING, logger="vivace.task_runs"):
        run_in_flow(lambda: use(Opaque()))
        _, runs = run_in_flow(lambda: use(Opaque()))
    assert len(executed) == 2
    assert runs[0].state_name == "Completed" and runs[0].cache_key is None
    warnings = [r.getMessage() for r in caplog.records if "not cached" in r.getMessage()]
    assert len(warnings) == 2 and "Opaque" in warnings[0] and "thing" in warnings[0]
    assert cache_index.read_entries(database_url) == []


def test_an_entry_is_written_only_once_the_value_is_persisted(database_url: str) -> None:
    @task(cache_policy=INPUTS, result_serializer="json")
    def not_json(x: int) -> set[int]:
        return {x}

    run_in_flow(lambda: not_json(1))
    assert cache_index.read_entries(database_url) == []


def test_caching_options_are_checked_at_decoration() -> None:
    def fn(x: int) -> int:
        return x

    with pytest.raises(ConfigurationError, match="caching needs the result persisted"):
        task(cache_policy=INPUTS, persist_result=False)(fn)
    with pytest.raises(ConfigurationError, match="not both"):
        task(cache_policy=INPUTS, cache_key_fn=lambda c, p: "k")(fn)
    with pytest.raises(ConfigurationError, match="cache_policy must be a policy"):
        task(cache_policy="inputs")(fn)
    with pytest.raises(ConfigurationError, match="needs a cache_policy"):
        task(cache_expiration=10)(fn)
    with pytest.raises(ConfigurationError, match=r"leaves out 'y', which is not a parameter"):
        task(cache_policy=(INPUTS - "y") + TASK_SOURCE)(fn)
    for bad in (-1, math.nan, math.inf, dt.timedelta.max):
        with pytest.raises(ConfigurationError, match="positive timedelta"):
            task(cache_policy=INPUTS, cache_expiration=bad)(fn)
    assert task(cache_policy=NO_CACHE)(fn).results is not None
    assert task(cache_policy=NO_CACHE)(fn).results.cache is None  # type: ignore[union-attr]


VALUES = [
    None,
    True,
    3,
    -2.5,
    "text é",
    b"\x00bytes",
    [1, (2, 3)],
    {"b": 1, "a": [None]},
    {3, 1, 2},
    frozenset({"x"}),
    {"alpha", "beta", "gamma", "delta"},  # iteration order follows the salted string hash
    Point(1, 2.0),
    dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    uuid.UUID("01900000-0000-7000-8000-000000000001"),
    Path("/tmp/data.csv"),
]


def test_keys_are_the_same_in_another_python_process() -> None:
    here = stable_digest(VALUES)
    code = (
        "import sys, datetime as dt, uuid\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_cache_hits import VALUES\n"
        "from vivace.results.hashing import stable_digest\n"
        "print(stable_digest(VALUES))\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.strip()
    assert there == here


def test_hashing_tells_apart_what_differs() -> None:
    assert stable_digest({"a": 1, "b": 2}) == stable_digest({"b": 2, "a": 1})
    assert stable_digest([1, 2]) != stable_digest((1, 2))
    assert stable_digest(1) != stable_digest(1.0) != stable_digest(True)
    assert stable_digest("1") != stable_digest(b"1")
    assert stable_digest(Point(1, 2.0)) != stable_digest(Point(1, 2.5))
    assert stable_digest(math.nan) == stable_digest(-math.nan) != stable_digest(0.0)
    with pytest.raises(UnhashableInputError, match=r"input\['conn'\]"):
        stable_digest({"conn": object()})


def test_cache_ls_and_clear(database_url: str) -> None:
    @task(cache_policy=INPUTS)
    def alpha(x: int) -> int:
        return x

    @task(cache_policy=INPUTS)
    def beta(x: int) -> int:
        return x

    run_in_flow(lambda: [alpha(1), alpha(2), beta(1)])
    runner = CliRunner()

    listed = runner.invoke(cli, ["cache", "ls"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("alpha") == 2 and listed.output.count("beta") == 1

    only_beta = runner.invoke(cli, ["cache", "ls", "--task", "beta"])
    assert "alpha" not in only_beta.output and "beta" in only_beta.output

    key = cache_index.read_entries(database_url, task_name="alpha", limit=1)[0].key
    by_key = runner.invoke(cli, ["cache", "clear", "--key", key])
    assert by_key.exit_code == 0 and "Deleted 1 cache entry with key" in by_key.output
    by_task = runner.invoke(cli, ["cache", "clear", "--task", "beta"])
    assert "Deleted 1 cache entry of task 'beta'" in by_task.output
    refused = runner.invoke(cli, ["cache", "clear"], input="n\n")
    assert refused.exit_code == 1 and cache_index.count_entries(database_url) == 1
    everything = runner.invoke(cli, ["cache", "clear", "--yes"])
    assert "Deleted 1 cache entry." in everything.output
    assert runner.invoke(cli, ["cache", "ls"]).output.strip() == "No cache entries found."
    bad = runner.invoke(cli, ["cache", "ls", "--limit", "0"])
    assert bad.exit_code == 2 and "--limit 0 is out of range" in bad.output


def _on_an_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_an_async_task_does_its_cache_io_off_the_event_loop(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vivace.results import persistence

    io_on_loop: list[tuple[str, bool]] = []
    lookup, write = cache_index.lookup, persistence.write_result

    def spied_lookup(*args: Any, **kwargs: Any) -> Any:
        io_on_loop.append(("lookup", _on_an_event_loop()))
        return lookup(*args, **kwargs)

    def spied_write(*args: Any, **kwargs: Any) -> Any:
        io_on_loop.append(("write", _on_an_event_loop()))
        return write(*args, **kwargs)

    monkeypatch.setattr(cache_index, "lookup", spied_lookup)
    monkeypatch.setattr(persistence, "write_result", spied_write)
    executed: list[int] = []

    @task(cache_policy=INPUTS)
    async def double(x: int) -> int:
        executed.append(x)
        return 2 * x

    @flow(task_runner=SequentialTaskRunner())
    async def pipeline(x: int) -> int:
        return await double(x)

    assert asyncio.run(pipeline(3)) == 6
    assert asyncio.run(pipeline(3)) == 6
    assert executed == [3]
    assert io_on_loop == [("lookup", False), ("write", False), ("lookup", False)]


def test_a_task_that_persists_nothing_does_no_result_io(
    database_url: str, vivace_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vivace.results import persistence

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a task without result options touched result storage")

    monkeypatch.setattr(cache_index, "lookup", refuse)
    monkeypatch.setattr(persistence, "write_result", refuse)

    @task
    def plain(x: int) -> int:
        return x

    @task
    async def plain_async(x: int) -> int:
        return x

    @flow(task_runner=SequentialTaskRunner())
    async def pipeline() -> int:
        return plain(1) + plain.submit(2).result() + await plain_async(3)

    assert asyncio.run(pipeline()) == 6
    assert not (vivace_home / "storage").exists()
