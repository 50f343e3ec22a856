"""States whose result lives in result storage: loaded on the first ``result()``, not before.

- :class:`PersistedState`: COMPLETED with a persisted result (a reused task of a resumed flow
  run, or any run read back from the store).
- :func:`state_from_record`: the final state of a run read from the store, with ``result()``
  that loads the persisted value, raises ResultError if there is none, or raises the failure.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from vivace.engine.states import State, StateType
from vivace.exceptions import ResultError
from vivace.results.persistence import ResultRef, read_result

_NOT_LOADED: Any = object()


class PersistedState(State):
    """A COMPLETED state whose value is read from result storage on the first ``result()``."""

    __slots__ = ("_loaded", "_lock", "on_error", "ref")

    def __init__(
        self,
        ref: ResultRef,
        name: str | None = None,
        message: str | None = None,
        timestamp: float | None = None,
        run_id: uuid.UUID | None = None,
    ) -> None:
        super().__init__(StateType.COMPLETED, name, message, timestamp=timestamp)
        self.ref = ref
        self.run_id = run_id
        self._loaded: Any = _NOT_LOADED
        self._lock = threading.Lock()
        # Called once, with the ResultError, if the value cannot be loaded (then it is raised).
        self.on_error: Callable[[ResultError], None] | None = None

    def result(self, raise_on_failure: bool = True) -> Any:
        if self._loaded is _NOT_LOADED:
            with self._lock:
                if self._loaded is _NOT_LOADED:
                    try:
                        self._loaded = read_result(self.ref)
                    except ResultError as error:
                        on_error, self.on_error = self.on_error, None
                        if on_error is not None:
                            on_error(error)
                        raise
        return self._loaded

    @property
    def data(self) -> Any:
        return self.result()


class _Unpersisted(State):
    """COMPLETED in the store, but its value was not persisted: ``result()`` says so."""

    __slots__ = ("_what",)

    def __init__(self, what: str, name: str, message: str | None, timestamp: float) -> None:
        super().__init__(StateType.COMPLETED, name, message, timestamp=timestamp)
        self._what = what

    def result(self, raise_on_failure: bool = True) -> Any:
        error = ResultError(
            f"{self._what} completed, but its result was not persisted, so it cannot be read "
            "back; run it with persist_result=True (or VIVACE_RESULTS_PERSIST_BY_DEFAULT=true)"
        )
        if raise_on_failure:
            raise error
        return error

    @property
    def data(self) -> Any:
        return None


def state_from_record(record: Any, what: str) -> State:
    """The current state of a run record (TaskRunRecord, FlowRunRecord), its result loadable."""
    timestamp = record.state_timestamp.timestamp()
    ref = result_ref_of(record)
    state: State
    if record.state_type is StateType.COMPLETED:
        if ref is not None:
            state = PersistedState(
                ref, record.state_name, record.state_message, timestamp, record.id
            )
        else:
            state = _Unpersisted(what, record.state_name, record.state_message, timestamp)
    else:
        state = State(
            record.state_type, record.state_name, record.state_message, timestamp=timestamp
        )
    state.run_id = record.id
    return state


def result_ref_of(record: Any) -> ResultRef | None:
    """The result reference a record or row carries, or None."""
    storage, key, serializer = record.result_storage, record.result_key, record.result_serializer
    if storage is None or key is None or serializer is None:
        return None
    return (storage, key, serializer)
