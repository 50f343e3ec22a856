"""Flow parameters: validated and coerced with pydantic; a bad one fails the run before it runs."""

from __future__ import annotations

from typing import Any

import pytest

from vivace import flow, task
from vivace.exceptions import ParameterValidationError

ran: list[str] = []


@task
def record(label: str) -> None:
    ran.append(label)


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


class Connection:
    """A type from the flow's module: hints name it as a string (``from __future__``)."""


def test_parameters_are_coerced_to_their_type_hints() -> None:
    @flow
    def pipeline(n: int, ratio: float, names: list[str], flag: bool = False) -> tuple[Any, ...]:
        return n, ratio, names, flag

    assert pipeline("7", "0.5", ("a", "b"), flag="true") == (7, 0.5, ["a", "b"], True)


def test_coerced_values_are_recorded(history: Any) -> None:
    @flow
    def pipeline(n: int) -> int:
        return n

    state = pipeline("7", return_state=True)
    assert state.result() == 7
    assert history.flow_run(state.run_id).parameters == {"n": 7}


def test_a_bad_parameter_fails_the_run_before_any_task_runs(
    database_url: str, history: Any
) -> None:
    @flow
    def pipeline(n: int) -> None:
        record("body")

    state = pipeline("seven", return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ParameterValidationError)
    assert "'n'" in str(error) and "pipeline" in str(error) and "seven" in str(error)
    assert ran == []
    run = history.flow_run(state.run_id)
    assert run.state_type == "FAILED"
    assert "'n'" in run.state_message
    assert run.run_count == 0
    assert run.parameters == {"n": "seven"}
    assert [s.type for s in history.flow_run_states(state.run_id)] == ["PENDING", "FAILED"]
    assert history.task_runs(state.run_id) == []


def test_a_bad_parameter_raises_when_called_directly() -> None:
    @flow
    def pipeline(n: int, m: int) -> None:
        record("body")

    with pytest.raises(ParameterValidationError, match="parameter 'm'"):
        pipeline(1, "x")
    assert ran == []


def test_every_bad_parameter_is_named() -> None:
    @flow
    def pipeline(a: int, b: int, c: int) -> None:
        pass

    with pytest.raises(ParameterValidationError) as raised:
        pipeline("x", 2, "y")
    assert "parameter 'a'" in str(raised.value) and "parameter 'c'" in str(raised.value)
    assert "parameter 'b'" not in str(raised.value)


def test_arguments_that_do_not_fit_the_signature_fail_the_run(history: Any) -> None:
    @flow
    def pipeline(n: int) -> None:
        record("body")

    with pytest.raises(ParameterValidationError, match="pipeline") as raised:
        pipeline(1, 2)
    assert "signature" in str(raised.value)
    with pytest.raises(ParameterValidationError):
        pipeline()
    assert ran == []
    assert [run.state_type for run in history.flow_runs("pipeline")] == ["FAILED", "FAILED"]


def test_without_validation_values_pass_through_unchanged() -> None:
    @flow(validate_parameters=False)
    def pipeline(n: int) -> Any:
        return n

    assert pipeline("7") == "7"


def test_unannotated_and_variadic_parameters_pass_through() -> None:
    @flow
    def pipeline(a, *rest: Any, b: int = 1, **extra: Any) -> Any:  # type: ignore[no-untyped-def]
        return a, rest, b, extra

    assert pipeline("x", 2, 3, b="4", z=5) == ("x", (2, 3), 4, {"z": 5})


def test_defaults_are_applied_and_recorded(history: Any) -> None:
    @flow
    def pipeline(n: int = 3, label: str | None = None) -> int:
        return n

    state = pipeline(return_state=True)
    assert state.result() == 3
    assert history.flow_run(state.run_id).parameters == {"n": 3, "label": None}


def test_arbitrary_types_are_checked_by_isinstance() -> None:
    @flow
    def pipeline(conn: Connection) -> Connection:
        return conn

    conn = Connection()
    assert pipeline(conn) is conn
    with pytest.raises(ParameterValidationError, match="'conn'"):
        pipeline("not a connection")


def test_a_parameter_with_a_leading_underscore_is_accepted() -> None:
    @flow
    def pipeline(_private: int, x: int = 0) -> int:
        return _private + x

    assert pipeline("2", x="3") == 5


@pytest.mark.parametrize("name", ["json", "schema", "copy", "dict", "model_config"])
def test_a_parameter_named_like_a_pydantic_attribute_is_accepted(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def pipeline({name}: int) -> int:\n    return {name}\n", namespace)
    pipeline = flow(namespace["pipeline"])
    assert pipeline("4") == 4
    with pytest.raises(ParameterValidationError, match=f"'{name}'"):
        pipeline("four")


def test_a_hint_that_cannot_be_resolved_is_not_checked() -> None:
    class Local:
        pass

    @flow
    def pipeline(thing: Local, n: int) -> Any:  # the string "Local" is not in the globals
        return thing, n

    assert pipeline("anything", "3") == ("anything", 3)


def test_a_hint_pydantic_cannot_validate_fails_the_run_not_crashes_it(history: Any) -> None:
    class Weird:
        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
            raise RuntimeError("no schema for Weird")

    def pipeline(thing: Any) -> None:
        record("body")

    pipeline.__annotations__["thing"] = Weird
    broken = flow(pipeline)
    state = broken(1, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ParameterValidationError)
    assert "validate_parameters=False" in str(error)
    assert ran == []
    assert history.flow_run(state.run_id).state_type == "FAILED"
    assert broken.with_options(validate_parameters=False)(1) is None
