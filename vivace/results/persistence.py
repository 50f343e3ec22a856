"""Writing a result to result storage and reading it back by the reference the database keeps.

A :data:`ResultRef` is ``(storage location, key, serializer name)``: all a process needs to find
and decode a result, recorded on the task run or flow run (and in the cache index), never the
bytes. Storages and serializers named in references are rebuilt once per process and reused.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from vivace.exceptions import ResultError
from vivace.results.serializers import Serializer, serializer_name, serializer_named
from vivace.results.storage import ResultStorage, default_storage, storage_from_location

ResultRef = tuple[str, str, str]
"""(storage location, key, serializer name)"""

_storages: dict[str, ResultStorage] = {}
_serializers: dict[str, Serializer] = {}
_lock = threading.Lock()
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def write_result(
    value: Any, storage: ResultStorage | None, serializer: Serializer, key: str
) -> ResultRef:
    """Serialize ``value`` and store it under ``key``; raises whatever the two raise.

    ``storage`` None means the default storage of the settings in force.
    """
    target = storage if storage is not None else _default()
    data = serializer.dumps(value)
    target.write(key, data)
    return (target.location, key, serializer_name(serializer))


def read_result(ref: ResultRef) -> Any:
    """The value a reference points at; raises ResultError if it cannot be read."""
    location, key, name = ref
    try:
        data = _storage(location).read(key)
    except FileNotFoundError:
        raise ResultError(
            f"the persisted result {key!r} is no longer in its storage {location!r} "
            "(deleted, or written on another machine's local disk)"
        ) from None
    except ResultError:
        raise
    except Exception as error:
        raise ResultError(
            f"the persisted result {key!r} cannot be read from {location!r}: "
            f"{type(error).__name__}: {error}"
        ) from error
    try:
        return _serializer(name).loads(data)
    except ResultError:
        raise
    except Exception as error:
        raise ResultError(
            f"the persisted result {key!r} in {location!r} cannot be decoded with the {name!r} "
            f"serializer: {type(error).__name__}: {error}"
        ) from error


def missing_result(ref: ResultRef) -> str | None:
    """Why the result a reference points at cannot be read, if a cheap check (the storage's
    ``exists``) tells; None when it is there, or when only reading it would tell."""
    location, key, _ = ref
    try:
        if _storage(location).exists(key) is not False:
            return None
    except Exception as error:
        return (
            f"its storage {location!r} cannot be checked for {key!r}: "
            f"{type(error).__name__}: {error}"
        )
    return (
        f"the persisted result {key!r} is no longer in its storage {location!r} (deleted, or "
        "written on another machine's local disk)"
    )


def storage_key(cache_key: str) -> str:
    """The storage key for a cached result: the cache key itself when it is a plain name."""
    if _PLAIN_KEY.match(cache_key):
        return cache_key
    import hashlib

    return hashlib.sha256(cache_key.encode()).hexdigest()


def _default() -> ResultStorage:
    storage = default_storage()
    return _storages.setdefault(storage.location, storage)


def _storage(location: str) -> ResultStorage:
    storage = _storages.get(location)
    if storage is None:
        with _lock:
            storage = _storages.get(location)
            if storage is None:
                storage = _storages[location] = storage_from_location(location)
    return storage


def _serializer(name: str) -> Serializer:
    serializer = _serializers.get(name)
    if serializer is None:
        serializer = _serializers[name] = serializer_named(name)
    return serializer


def forget_storages() -> None:
    """Drop the storages rebuilt so far (tests; a saved block changed)."""
    with _lock:
        _storages.clear()
