"""Run states: what a flow run or task run is doing, and the result it ended with.

A state is an immutable value: ``type`` (a :class:`StateType`), ``name`` (the type's title unless
the state is a named variant such as ``Retrying`` or ``TimedOut``), ``timestamp`` (Unix seconds),
``message`` and, for final states, the run's return value or exception.
"""

from __future__ import annotations

import enum
import time
from typing import Any

from vivace.exceptions import CrashedRunError


class StateType(enum.StrEnum):
    """The kind of a state; every named state is one of these."""

    SCHEDULED = "SCHEDULED"  # created to run at a later time
    PENDING = "PENDING"  # created, waiting for its upstreams or a worker
    RUNNING = "RUNNING"  # its function is executing
    COMPLETED = "COMPLETED"  # final: returned a value
    FAILED = "FAILED"  # final: raised, timed out, or an upstream failed
    CRASHED = "CRASHED"  # final: killed from outside (interrupt, exit, dead worker)
    CANCELLED = "CANCELLED"  # final: cancelled before it finished
    CANCELLING = "CANCELLING"  # cancellation requested, not yet confirmed
    PAUSED = "PAUSED"  # suspended, waiting to be resumed

    def __str__(self) -> str:
        return self.value


FINAL_TYPES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
)

# Named variants, spelled once so the engine, the store and tests agree.
RETRYING = "Retrying"
AWAITING_RETRY = "AwaitingRetry"
TIMED_OUT = "TimedOut"
UPSTREAM_FAILED = "UpstreamFailed"
CACHED = "Cached"  # COMPLETED from the cache index, without running
RESUMING = "Resuming"  # PENDING: a flow run claimed by a resume, about to run again
# FAILED, never ran: a call reused from an earlier attempt whose persisted result could not be
# loaded (a later resume then runs the call again)
RESULT_LOST = "ResultLost"

_NO_DATA: Any = object()
_TITLES = {member: member.value.title() for member in StateType}


class State:
    """One state of a run. ``result()`` gives the value, or raises the failure."""

    __slots__ = ("_data", "message", "name", "run_id", "timestamp", "type")

    def __init__(
        self,
        type: StateType,
        name: str | None = None,
        message: str | None = None,
        data: Any = _NO_DATA,
        timestamp: float | None = None,
    ) -> None:
        self.type = type
        self.name = name if name is not None else _TITLES[type]
        self.message = message
        self.timestamp = time.time() if timestamp is None else timestamp
        self._data = data
        # The run this state belongs to, set when it becomes a run's state.
        self.run_id: Any = None

    def result(self, raise_on_failure: bool = True) -> Any:
        """Return the run's value; for a failed or crashed run raise its exception.

        With ``raise_on_failure=False`` the exception is returned instead of raised.
        """
        data = self._data
        if self.type is StateType.COMPLETED:
            return None if data is _NO_DATA else data
        if self.type in FINAL_TYPES:
            error = data if isinstance(data, BaseException) else _error_for(self)
            if raise_on_failure:
                raise error
            return error
        raise ValueError(
            f"state {self.name!r} ({self.type.value}) is not final and has no result yet; "
            "wait for the run to finish first"
        )

    @property
    def data(self) -> Any:
        """The raw value or exception carried by the state (None if it carries none)."""
        return None if self._data is _NO_DATA else self._data

    def is_scheduled(self) -> bool:
        return self.type is StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_cancelling(self) -> bool:
        return self.type is StateType.CANCELLING

    def is_paused(self) -> bool:
        return self.type is StateType.PAUSED

    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    def __repr__(self) -> str:
        message = f", message={self.message!r}" if self.message else ""
        return f"{self.name}(type={self.type.value}{message})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return (self.type, self.name, self.message, self.timestamp) == (
            other.type,
            other.name,
            other.message,
            other.timestamp,
        )

    __hash__ = None  # type: ignore[assignment]


def _error_for(state: State) -> BaseException:
    if state.type is StateType.CRASHED:
        return CrashedRunError(state.message or "the run crashed")
    from vivace.exceptions import VivaceError

    return VivaceError(state.message or f"the run ended {state.name}")


# Constructors, named like the states they make.
def Scheduled(message: str | None = None) -> State:
    return State(StateType.SCHEDULED, message=message)


def Pending(message: str | None = None) -> State:
    return State(StateType.PENDING, message=message)


def Running(name: str | None = None) -> State:
    return State(StateType.RUNNING, name=name)


def Completed(data: Any = None, name: str | None = None, message: str | None = None) -> State:
    return State(StateType.COMPLETED, name=name, message=message, data=data)


def Failed(
    error: BaseException | None = None, name: str | None = None, message: str | None = None
) -> State:
    if message is None and error is not None:
        message = describe_exception(error)
    return State(
        StateType.FAILED, name=name, message=message, data=_NO_DATA if error is None else error
    )


def Crashed(error: BaseException | None = None, message: str | None = None) -> State:
    if message is None and error is not None:
        message = describe_exception(error)
    return State(StateType.CRASHED, message=message, data=_NO_DATA if error is None else error)


def Cancelled(message: str | None = None) -> State:
    return State(StateType.CANCELLED, message=message)


def AwaitingRetry(message: str | None = None) -> State:
    return State(StateType.SCHEDULED, name=AWAITING_RETRY, message=message)


def retry_scheduled(attempt: int, attempts: int, reason: str | None) -> State:
    """``AwaitingRetry`` after failed attempt ``attempt`` of ``attempts``."""
    return AwaitingRetry(f"attempt {attempt} of {attempts} failed: {reason}")


def interrupted(error: BaseException, what: str) -> State:
    """The final state of a ``what`` ("task run", "flow run") stopped by a BaseException.

    Cancellation (asyncio's, a deployment's run cancelled on request, or the interrupt of an
    enclosing run's timeout) is CANCELLED; an interrupt, exit or anything else from outside the
    run's code is CRASHED.
    """
    import asyncio

    from vivace.engine.signals import FlowRunCancelled
    from vivace.engine.timeouts import TimeoutInterrupt

    if isinstance(error, asyncio.CancelledError):
        return Cancelled(f"the {what} was cancelled")
    if isinstance(error, FlowRunCancelled):
        if what == "flow run":
            return Cancelled("the flow run was cancelled on request")
        return Cancelled(f"the {what} was stopped: its flow run was cancelled on request")
    if isinstance(error, TimeoutInterrupt):
        return Cancelled("stopped: the run it ran in timed out")
    return Crashed(error, message=f"the {what} crashed: {describe_exception(error)}")


def describe_exception(error: BaseException) -> str:
    """One line for a state message: the exception's type and its text."""
    text = str(error)
    kind = type(error).__name__
    return f"{kind}: {text}" if text else kind
