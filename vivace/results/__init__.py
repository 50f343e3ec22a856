"""Persisted results: result storage, serializers, and reading results back from the store.

A task or flow with ``persist_result=True`` (or a cache policy, or
``VIVACE_RESULTS_PERSIST_BY_DEFAULT=true``) writes its return value to result storage; the
database keeps only a reference (storage location, key, serializer). ``record.state.result()``
on a run read back from the store (``vivace.store.queries.read_task_run``) loads it, in any
process. See :mod:`vivace.cache_policies` for caching and :func:`vivace.resume_flow_run` for
resuming a failed flow run from its point of failure.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use, not with the package: every @task imports vivace.results.options, and
# ``import vivace`` must not pay for storage, persistence and the serializers' libraries.
_WHERE = {
    "BlockResultStorage": "storage",
    "CloudpickleSerializer": "serializers",
    "CompressedSerializer": "serializers",
    "FsspecResultStorage": "storage",
    "JSONSerializer": "serializers",
    "LocalResultStorage": "storage",
    "PersistedState": "states",
    "PickleSerializer": "serializers",
    "ResultRef": "persistence",
    "ResultStorage": "storage",
    "Serializer": "serializers",
    "read_result": "persistence",
    "state_from_record": "states",
    "write_result": "persistence",
}

if TYPE_CHECKING:
    from vivace.results.persistence import ResultRef, read_result, write_result
    from vivace.results.serializers import (
        CloudpickleSerializer,
        CompressedSerializer,
        JSONSerializer,
        PickleSerializer,
        Serializer,
    )
    from vivace.results.states import PersistedState, state_from_record
    from vivace.results.storage import (
        BlockResultStorage,
        FsspecResultStorage,
        LocalResultStorage,
        ResultStorage,
    )


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vivace.results' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vivace.results.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BlockResultStorage",
    "CloudpickleSerializer",
    "CompressedSerializer",
    "FsspecResultStorage",
    "JSONSerializer",
    "LocalResultStorage",
    "PersistedState",
    "PickleSerializer",
    "ResultRef",
    "ResultStorage",
    "Serializer",
    "read_result",
    "state_from_record",
    "write_result",
]
