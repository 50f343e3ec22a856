"""Bad input: each error names the thing that is wrong and says what was expected.

Configuration errors are raised where the configuration is given (the decorator, with_options,
the runner's constructor), not deep inside a run.
"""

from __future__ import annotations

from typing import Any

import pytest

from vivace import flow, task, unmapped
from vivace.exceptions import ConfigurationError, ParameterValidationError, VivaceError


def load(x: int = 0, y: int = 0) -> int:
    return x + y


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("thing", [5, "load", [load], 2.5], ids=repr)
def test_a_non_callable_is_refused_by_the_decorator(decorator: Any, thing: Any) -> None:
    with pytest.raises(ConfigurationError, match="expects a function") as raised:
        decorator(thing)
    assert repr(thing) in str(raised.value)


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("retries", [-1, 1.5, True, "3"], ids=repr)
def test_bad_retries(decorator: Any, retries: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        decorator(retries=retries)(load)
    message = str(raised.value)
    assert "'load'" in message and "retries" in message and repr(retries) in message
    assert "0 or more" in message


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("delay", [-1, "5", [1, -2], [1, "x"], None], ids=repr)
def test_bad_retry_delay(decorator: Any, delay: Any) -> None:
    with pytest.raises(ConfigurationError, match="retry_delay_seconds") as raised:
        decorator(retry_delay_seconds=delay)(load)
    assert "'load'" in str(raised.value)


@pytest.mark.parametrize("factor", [-0.1, "0.5", True], ids=repr)
def test_bad_retry_jitter_factor(factor: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"retry_jitter_factor must be a number"):
        task(retry_jitter_factor=factor)(load)


def test_a_retry_condition_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="retry_condition_fn must be callable, got 3"):
        task(retry_condition_fn=3)(load)


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
@pytest.mark.parametrize("seconds", [0, -1, "5", True], ids=repr)
def test_bad_timeout(decorator: Any, seconds: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        decorator(timeout_seconds=seconds)(load)
    message = str(raised.value)
    assert "timeout_seconds" in message and "positive number of seconds" in message
    assert repr(seconds) in message and "'load'" in message


def test_tags_must_be_a_list_of_strings() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean \['etl'\]"):
        task(tags="etl")(load)
    with pytest.raises(ConfigurationError, match="tags must all be strings"):
        task(tags=["etl", 3])(load)


@pytest.mark.parametrize("name", ["", "   ", 3], ids=repr)
def test_a_name_must_be_a_non_empty_string(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="name must be a non-empty string"):
        task(name=name)(load)


@pytest.mark.parametrize("option", ["validate_parameters", "log_prints"])
def test_flow_switches_must_be_booleans(option: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{option} must be True or False, got 'yes'"):
        flow(**{option: "yes"})(load)


def test_a_bad_task_runner_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"task_runner must be a task runner .* got 'x'"):
        flow(task_runner="x")(load)


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
def test_an_unknown_decorator_option_is_named_with_the_known_ones(decorator: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        decorator(retry=3)(load)
    message = str(raised.value)
    assert "unknown option 'retry'" in message
    assert "did you mean 'retries'?" in message
    assert "expected one of: name, " in message


@pytest.mark.parametrize("decorator", [task, flow], ids=["task", "flow"])
def test_an_unknown_with_options_keyword_is_named_with_the_known_ones(decorator: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        decorator(load).with_options(timeout=3, colour="red")
    message = str(raised.value)
    assert "'load'" in message and "with_options()" in message
    assert "'timeout' (did you mean 'timeout_seconds'?)" in message
    assert "'colour'" in message
    assert "expected one of:" in message and "timeout_seconds" in message


def test_with_options_checks_the_new_values() -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        task(load).with_options(retries=-2)
    with pytest.raises(ConfigurationError, match="timeout_seconds"):
        flow(load).with_options(timeout_seconds=0)


def test_a_bad_flow_parameter_is_named() -> None:
    @flow
    def pipeline(count: int) -> None:
        pass

    with pytest.raises(ParameterValidationError) as raised:
        pipeline(count="many")
    message = str(raised.value)
    assert "flow 'pipeline'" in message and "parameter 'count'" in message
    assert "valid integer" in message and "'many'" in message


def test_map_length_mismatch_names_both_arguments_and_their_lengths() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow
    def pipeline() -> None:
        add.map([1, 2, 3], y=[1, 2])

    with pytest.raises(ConfigurationError) as raised:
        pipeline()
    message = str(raised.value)
    assert "task 'add'" in message and "different lengths" in message
    assert "x has 3" in message and "y has 2" in message
    assert "unmapped()" in message


def test_map_without_an_iterable_says_so() -> None:
    @task
    def add(x: int, y: int) -> int:
        return x + y

    @flow
    def pipeline() -> None:
        add.map(1, unmapped([1, 2]))

    with pytest.raises(ConfigurationError, match=r"task 'add': \.map\(\) needs at least one"):
        pipeline()


def test_submit_outside_a_flow_says_where_to_call_it() -> None:
    with pytest.raises(ConfigurationError, match=r"\.submit\(\) needs a flow run") as raised:
        task(load).submit(1)
    assert "task 'load'" in str(raised.value)


def test_every_error_derives_from_vivace_error() -> None:
    from vivace import exceptions

    errors = [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(errors) >= 10
    assert all(issubclass(error, VivaceError) for error in errors)
