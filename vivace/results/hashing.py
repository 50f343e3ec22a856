"""Stable hashing of task inputs: the same value gives the same digest in any process, any run.

Cache keys must not depend on the process that computes them, so nothing here uses ``hash()``
(salted per process for strings) or pickle bytes (cloudpickle's output varies between runs). A
value is walked and fed to SHA-256 as a canonical encoding: a type tag, then the value's
content. Handled: None, bool, int, float, complex, str, bytes, list, tuple, dict (keys in a
canonical order), set and frozenset, Enum, datetime/date/time/timedelta, UUID, Decimal, Path,
dataclasses, pydantic models, NumPy arrays and scalars, pandas objects, and any object that
defines ``__vivace_hash__()`` returning a value that can itself be hashed here.

Anything else raises :class:`UnhashableInputError`, naming where in the input it was found: the
engine then warns and runs the task without caching, rather than guess at a key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import math
import pathlib
import struct
import sys
import uuid
from typing import Any

_MAX_DEPTH = 200


class UnhashableInputError(TypeError):
    """An input cannot be encoded stably, so no cache key can be made from it."""


def stable_digest(value: Any) -> str:
    """The SHA-256 hex digest of ``value``'s canonical encoding."""
    digest = hashlib.sha256()
    _feed(digest, value, "input", 0)
    return digest.hexdigest()


def _feed(digest: Any, value: Any, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise UnhashableInputError(f"{where} nests deeper than {_MAX_DEPTH} levels (a cycle?)")
    update = digest.update
    kind = type(value)
    if value is None:
        update(b"N")
    elif kind is bool:
        update(b"T" if value else b"F")
    elif kind is int:
        text = str(value).encode()
        update(b"i%d:" % len(text) + text)
    elif kind is float:
        update(b"f" + _float_bytes(value))
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        update(b"s%d:" % len(data) + data)
    elif kind is bytes or kind is bytearray or kind is memoryview:
        data = bytes(value)
        update(b"b%d:" % len(data) + data)
    elif kind is list or kind is tuple:
        update((b"l" if kind is list else b"t") + b"%d:" % len(value))
        for index, item in enumerate(value):
            _feed(digest, item, f"{where}[{index}]", depth + 1)
    elif kind is dict:
        update(b"d%d:" % len(value))
        for key_digest, key, item in _sorted_items(value, where, depth):
            update(key_digest)
            _feed(digest, item, f"{where}[{key!r}]", depth + 1)
    elif kind is set or kind is frozenset:
        members = sorted(_digest_of(item, f"{where} (a set member)", depth) for item in value)
        update(b"S%d:" % len(members) + b"".join(members))
    else:
        _feed_other(digest, value, where, depth)


def _feed_other(digest: Any, value: Any, where: str, depth: int) -> None:
    update = digest.update
    hook = getattr(type(value), "__vivace_hash__", None)
    if hook is not None:
        update(b"h" + _type_name(value))
        _feed(digest, hook(value), f"{where}.__vivace_hash__()", depth + 1)
    elif isinstance(value, enum.Enum):
        update(b"e" + _type_name(value))
        _feed(digest, value.value, f"{where}.value", depth + 1)
    elif isinstance(value, bool | int | float | str | bytes):  # subclasses of the built-ins
        update(b"u" + _type_name(value))
        _feed(digest, _builtin_value(value), where, depth + 1)
    elif isinstance(value, dt.datetime | dt.date | dt.time):
        update(b"D" + _type_name(value) + value.isoformat().encode())
    elif isinstance(value, dt.timedelta):
        update(b"Z" + repr((value.days, value.seconds, value.microseconds)).encode())
    elif isinstance(value, uuid.UUID):
        update(b"U" + value.bytes)
    elif isinstance(value, decimal.Decimal):
        update(b"M" + str(value).encode())
    elif isinstance(value, pathlib.PurePath):
        update(b"P" + _type_name(value) + str(value).encode("utf-8", "surrogatepass"))
    elif isinstance(value, complex):
        update(b"c" + _float_bytes(value.real) + _float_bytes(value.imag))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        update(b"C" + _type_name(value))
        for field in dataclasses.fields(value):
            _feed(digest, field.name, where, depth + 1)
            _feed(digest, getattr(value, field.name), f"{where}.{field.name}", depth + 1)
    elif _is_pydantic_model(value):
        update(b"m" + _type_name(value))
        _feed(digest, value.model_dump(mode="python"), f"{where}", depth + 1)
    elif _module_of(value) == "numpy":
        _feed_numpy(digest, value, where)
    elif _module_of(value) == "pandas":
        _feed_pandas(digest, value, where, depth)
    else:
        raise UnhashableInputError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__} "
            f"({_short_repr(value)}), which has no stable encoding; give it a "
            "__vivace_hash__() method, leave it out of the key (INPUTS - 'name'), or use "
            "cache_key_fn"
        )


def _digest_of(value: Any, where: str, depth: int) -> bytes:
    digest = hashlib.sha256()
    _feed(digest, value, where, depth + 1)
    return digest.digest()


def _sorted_items(mapping: dict[Any, Any], where: str, depth: int) -> list[tuple[bytes, Any, Any]]:
    items = [
        (_digest_of(key, f"{where} (a key)", depth), key, item) for key, item in mapping.items()
    ]
    items.sort(key=lambda entry: entry[0])
    return items


_NAN = struct.pack(">d", math.nan)


def _float_bytes(value: float) -> bytes:
    # Every NaN (whatever its sign and payload bits) as one value, in the same 8 bytes as any
    # other float, so that the encoding stays unambiguous.
    return _NAN if math.isnan(value) else struct.pack(">d", value)


def _builtin_value(value: Any) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return bytes(value)


def _type_name(value: Any) -> bytes:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}:".encode()


def _module_of(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def _is_pydantic_model(value: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _feed_numpy(digest: Any, value: Any, where: str) -> None:
    import numpy

    if isinstance(value, numpy.ndarray):
        if value.dtype.hasobject:
            raise UnhashableInputError(
                f"{where} is a NumPy array of Python objects, which has no stable encoding"
            )
        array = numpy.ascontiguousarray(value)
        header = f"{array.dtype.str}{array.shape}".encode()
        digest.update(b"A" + header + b":")
        digest.update(array.tobytes())
    elif isinstance(value, numpy.generic):
        digest.update(b"a" + value.dtype.str.encode() + b":" + value.tobytes())
    else:
        raise UnhashableInputError(f"{where} is a NumPy {type(value).__name__}, not an array")


def _feed_pandas(digest: Any, value: Any, where: str, depth: int) -> None:
    import pandas

    if isinstance(value, pandas.DataFrame | pandas.Series | pandas.Index):
        hashed = pandas.util.hash_pandas_object(value, index=True)
        digest.update(b"p" + _type_name(value))
        _feed(digest, [str(c) for c in getattr(value, "columns", [])], where, depth + 1)
        digest.update(hashed.to_numpy().tobytes())
    else:
        raise UnhashableInputError(f"{where} is a pandas {type(value).__name__}")


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
