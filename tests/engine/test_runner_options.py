"""How a task's runs are handed to a runner: ``runner_options`` and ``.map(batch_size=...)``.

Both are checked where they are given (the decorator, ``with_options``, the ``.map()`` call).
"""

from __future__ import annotations

from typing import Any

import pytest

from vivace import flow, task
from vivace.exceptions import ConfigurationError


def work(x: int) -> int:
    return x


def test_runner_options_are_kept_and_changed_by_with_options() -> None:
    placed = task(runner_options={"resources": {"GPU": 1}, "priority": 5})(work)
    assert placed.runner_options == {"resources": {"GPU": 1}, "priority": 5}
    moved = placed.with_options(runner_options={"num_cpus": 2})
    assert moved.runner_options == {"num_cpus": 2}
    assert placed.with_options(name="other").runner_options == placed.runner_options
    assert task(work).runner_options is None


def test_every_known_runner_option_is_accepted() -> None:
    options = {
        "resources": {"GPU": 1, "memory": 2.5},
        "priority": -1,
        "workers": ["tcp://10.0.0.1:1234"],
        "allow_other_workers": True,
        "num_cpus": 1,
        "num_gpus": 0.5,
        "memory": 2**30,
    }
    assert task(runner_options=options)(work).runner_options == options


def test_an_unknown_runner_option_names_it_and_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as raised:
        task(runner_options={"resources": {"GPU": 1}, "gpus": 1})(work)
    message = str(raised.value)
    assert "task 'work': runner_options got unknown key 'gpus'" in message
    for known in ("resources", "priority", "workers", "allow_other_workers", "num_gpus"):
        assert known in message
    with pytest.raises(ConfigurationError, match="unknown key 'retries'"):
        task(work).with_options(runner_options={"retries": 3})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(["GPU"], "runner_options must be a dict", id="not-a-dict"),
        pytest.param({"resources": {"GPU": -1}}, r"\['resources'\] must map", id="resources"),
        pytest.param({"num_cpus": "2"}, r"\['num_cpus'\] must be a number", id="num-cpus"),
        pytest.param({"priority": 1.5}, r"\['priority'\] must be a whole number", id="priority"),
        pytest.param({"workers": 7}, r"\['workers'\] must be a worker address", id="workers"),
        pytest.param({"allow_other_workers": 1}, "must be True or False", id="allow-other"),
    ],
)
def test_runner_option_values_are_checked(options: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        task(runner_options=options)(work)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "10"])
def test_map_batch_size_must_be_a_positive_whole_number(bad: Any) -> None:
    doubled = task(work)

    @flow
    def pipeline() -> None:
        doubled.map([1, 2], batch_size=bad)

    with pytest.raises(ConfigurationError, match=r"\.map\(\) batch_size must be a whole number"):
        pipeline()


def test_map_with_a_batch_size_needs_a_flow() -> None:
    with pytest.raises(ConfigurationError, match=r"\.map\(\) needs a flow run"):
        task(work).map([1, 2], batch_size=2)
