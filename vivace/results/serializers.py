"""Serializers: how a persisted result becomes bytes in result storage, and back.

A serializer is named in the database next to the result's location, so any process can read the
result back: ``"cloudpickle"`` (the default: almost any Python value), ``"json"`` (portable,
readable by other tools, JSON values only), ``"pickle"``, and a ``"compressed/"`` variant of each
(zlib) for large, repetitive results. A serializer of your own subclasses :class:`Serializer`; it
is named by its import path (``"package.module:ClassName"``) and rebuilt without arguments.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any

from vivace.exceptions import ConfigurationError, ResultError

# json, pickle, zlib and cloudpickle are imported where they are used: every task resolves its
# serializer when it is decorated, and ``import vivace`` must stay cheap.

DEFAULT_SERIALIZER = "cloudpickle"
COMPRESSED_PREFIX = "compressed/"


class Serializer(abc.ABC):
    """Turns a result into bytes and back; ``name`` is what the database records."""

    name: str

    @abc.abstractmethod
    def dumps(self, value: Any) -> bytes:
        """The value as bytes; raises if this serializer cannot represent it."""

    @abc.abstractmethod
    def loads(self, data: bytes) -> Any:
        """The value back from the bytes ``dumps`` made."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CloudpickleSerializer(Serializer):
    """Any value cloudpickle can pickle (functions and classes defined in scripts included)."""

    name = "cloudpickle"

    def dumps(self, value: Any) -> bytes:
        import cloudpickle

        return bytes(cloudpickle.dumps(value, protocol=5))

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)


class PickleSerializer(Serializer):
    """The standard library's pickle: values whose classes can be imported where they are read."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        import pickle

        return pickle.dumps(value, protocol=5)

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)


class JSONSerializer(Serializer):
    """JSON values only (dict, list, str, int, float, bool, None); readable by any tool."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        import json

        try:
            return json.dumps(value, allow_nan=True, separators=(",", ":")).encode()
        except (TypeError, ValueError) as error:
            raise TypeError(f"the json serializer cannot represent the result: {error}") from None

    def loads(self, data: bytes) -> Any:
        import json

        return json.loads(data)


class CompressedSerializer(Serializer):
    """Another serializer's bytes, compressed with zlib."""

    def __init__(self, inner: Serializer, level: int = 6) -> None:
        self.inner = inner
        self.level = level
        self.name = COMPRESSED_PREFIX + inner.name

    def dumps(self, value: Any) -> bytes:
        import zlib

        return zlib.compress(self.inner.dumps(value), self.level)

    def loads(self, data: bytes) -> Any:
        import zlib

        return self.inner.loads(zlib.decompress(data))


_BUILT_IN: dict[str, type[Serializer]] = {
    "cloudpickle": CloudpickleSerializer,
    "pickle": PickleSerializer,
    "json": JSONSerializer,
}
_EXPECTED = (
    "'cloudpickle', 'pickle', 'json', one of them prefixed with 'compressed/', a Serializer "
    "instance, or the import path of a Serializer subclass ('package.module:ClassName')"
)


def resolve_serializer(value: Any, what: str = "result_serializer") -> Serializer:
    """The serializer for an option value: a name, or a :class:`Serializer` instance.

    Raises ConfigurationError naming ``what`` for anything else.
    """
    if isinstance(value, Serializer):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be {_EXPECTED}; got {value!r}")
    try:
        return serializer_named(value)
    except ResultError as error:
        raise ConfigurationError(f"{what}: {error}") from None


def serializer_named(name: str) -> Serializer:
    """Rebuild the serializer the database names (raises ResultError if it cannot be)."""
    if name.startswith(COMPRESSED_PREFIX):
        return CompressedSerializer(serializer_named(name[len(COMPRESSED_PREFIX) :]))
    kind = _BUILT_IN.get(name)
    if kind is not None:
        return kind()
    if ":" in name:
        module_name, _, qualname = name.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as error:
            raise ResultError(f"serializer {name!r} cannot be imported here: {error}") from None
        if isinstance(found, type) and issubclass(found, Serializer):
            return found()
    raise ResultError(f"unknown serializer {name!r}; expected {_EXPECTED}")


def serializer_name(serializer: Serializer) -> str:
    """The name to record for ``serializer``: its own name, or its import path."""
    if isinstance(serializer, CompressedSerializer):
        return COMPRESSED_PREFIX + serializer_name(serializer.inner)
    if type(serializer) in _BUILT_IN.values():
        return serializer.name
    kind = type(serializer)
    return f"{kind.__module__}:{kind.__qualname__}"
