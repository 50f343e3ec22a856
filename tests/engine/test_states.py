"""States: the StateType members, named states, predicates and ``result()``."""

from __future__ import annotations

import pytest

from vivace import State, StateType
from vivace.engine.states import (
    AWAITING_RETRY,
    RETRYING,
    TIMED_OUT,
    UPSTREAM_FAILED,
    AwaitingRetry,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Running,
    Scheduled,
)
from vivace.exceptions import CrashedRunError, VivaceError

PREDICATES = {
    StateType.SCHEDULED: "is_scheduled",
    StateType.PENDING: "is_pending",
    StateType.RUNNING: "is_running",
    StateType.COMPLETED: "is_completed",
    StateType.FAILED: "is_failed",
    StateType.CRASHED: "is_crashed",
    StateType.CANCELLED: "is_cancelled",
    StateType.CANCELLING: "is_cancelling",
    StateType.PAUSED: "is_paused",
}
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def test_state_type_members_are_the_specified_ones() -> None:
    assert [member.name for member in StateType] == [
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CRASHED",
        "CANCELLED",
        "CANCELLING",
        "PAUSED",
    ]
    assert all(member.value == member.name for member in StateType)


def test_named_states_are_spelled_as_specified() -> None:
    assert (RETRYING, AWAITING_RETRY, TIMED_OUT, UPSTREAM_FAILED) == (
        "Retrying",
        "AwaitingRetry",
        "TimedOut",
        "UpstreamFailed",
    )


@pytest.mark.parametrize("kind", list(StateType), ids=lambda kind: kind.value.lower())
def test_exactly_one_predicate_is_true_and_is_final_matches(kind: StateType) -> None:
    state = State(kind)
    assert state.type is kind
    assert state.name == kind.value.title()
    true = [name for name in PREDICATES.values() if getattr(state, name)()]
    assert true == [PREDICATES[kind]]
    assert state.is_final() is (kind in FINAL)


def test_a_state_has_type_name_timestamp_and_message() -> None:
    state = State(StateType.SCHEDULED, name=AWAITING_RETRY, message="soon", timestamp=12.5)
    assert (state.type, state.name, state.message, state.timestamp) == (
        StateType.SCHEDULED,
        "AwaitingRetry",
        "soon",
        12.5,
    )


def test_timestamp_defaults_to_now() -> None:
    import time

    before = time.time()
    state = State(StateType.PENDING)
    assert before <= state.timestamp <= time.time()


def test_constructors_make_the_states_they_are_named_after() -> None:
    assert Scheduled().type is StateType.SCHEDULED
    assert Pending().type is StateType.PENDING
    assert Running().type is StateType.RUNNING
    assert Running(name=RETRYING).name == "Retrying"
    assert Completed(1).type is StateType.COMPLETED
    assert Failed().type is StateType.FAILED
    assert Crashed().type is StateType.CRASHED
    assert Cancelled().type is StateType.CANCELLED
    retry = AwaitingRetry("later")
    assert (retry.type, retry.name, retry.message) == (
        StateType.SCHEDULED,
        "AwaitingRetry",
        "later",
    )


def test_completed_result_is_the_value() -> None:
    value = object()
    assert Completed(value).result() is value
    assert Completed().result() is None
    assert Completed(value).data is value


def test_failed_result_raises_the_same_exception_or_returns_it() -> None:
    error = ValueError("bad row 7")
    state = Failed(error)
    assert state.message == "ValueError: bad row 7"
    with pytest.raises(ValueError, match="bad row 7") as raised:
        state.result()
    assert raised.value is error
    assert state.result(raise_on_failure=False) is error


def test_failed_without_an_exception_raises_a_vivace_error_with_its_message() -> None:
    state = State(StateType.FAILED, message="it went wrong")
    with pytest.raises(VivaceError, match="it went wrong"):
        state.result()
    assert isinstance(state.result(raise_on_failure=False), VivaceError)


def test_crashed_without_an_exception_raises_crashed_run_error() -> None:
    state = Crashed(message="worker died")
    with pytest.raises(CrashedRunError, match="worker died"):
        state.result()


def test_crashed_with_an_interrupt_carries_it() -> None:
    interrupt = KeyboardInterrupt()
    state = Crashed(interrupt)
    assert state.message == "KeyboardInterrupt"
    assert state.result(raise_on_failure=False) is interrupt


@pytest.mark.parametrize(
    "kind", [StateType.PENDING, StateType.RUNNING, StateType.SCHEDULED, StateType.PAUSED]
)
def test_result_of_a_state_that_is_not_final_says_so(kind: StateType) -> None:
    with pytest.raises(ValueError, match="not final"):
        State(kind).result()


def test_repr_shows_name_type_and_message() -> None:
    assert repr(Failed(KeyError("k"), name=TIMED_OUT)) == (
        "TimedOut(type=FAILED, message=\"KeyError: 'k'\")"
    )
    assert repr(State(StateType.RUNNING)) == "Running(type=RUNNING)"


def test_states_compare_by_value_and_are_not_hashable() -> None:
    a = State(StateType.RUNNING, timestamp=1.0)
    b = State(StateType.RUNNING, timestamp=1.0)
    assert a == b
    assert a != State(StateType.RUNNING, timestamp=2.0)
    with pytest.raises(TypeError):
        hash(a)


def test_state_type_str_is_its_value() -> None:
    assert str(StateType.COMPLETED) == "COMPLETED"
    assert StateType("FAILED") is StateType.FAILED
