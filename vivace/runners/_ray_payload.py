"""How :class:`~vivace.runners.ray.RayTaskRunner` hands a Ray task its one argument.

The run's call (or a batch's calls) travels as bytes pickled on the driver by the C pickler
(:func:`payload_of`): Ray's own serialization of a Python object argument costs several times as
much per task. What only Ray may pickle (an ``ObjectRef`` a user passed), what the C pickler cannot
(a lambda) or would name in ``__main__``, and large buffers go to Ray as objects. The worker
unpickles the bytes (:mod:`vivace.runners._ray_worker`).

Ray is imported only when the first payload is made, by a runner that has found it installed.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

_PAYLOAD_LIMIT = 64 * 1024  # bytes; bigger payloads go to Ray as objects (zero-copy buffers)

# How a pickle (protocol 4+) names the module ``__main__`` when it refers to something defined
# there (a string that merely contains "__main__", such as a task key, does not match).
_MAIN_MODULE = pickle.SHORT_BINUNICODE + bytes([len("__main__")]) + b"__main__"


def payload_of(value: Any) -> Any:
    """``value`` (the runs' calls) as it goes to ``.remote()``: pickled here when possible.

    Ray serializes a Python object argument with its own cloudpickle, at several times the cost
    of the C pickler per task, and bytes pass through Ray untouched. Pickled here unless the
    value holds something only Ray may pickle (an ``ObjectRef`` or actor handle a user passed,
    which Ray must count), something the C pickler cannot pickle (a lambda) or would pickle by
    a reference the worker cannot follow (anything defined in ``__main__``), or large buffers
    (which Ray moves without copying): then Ray gets the objects, as before.
    """
    if len(copyreg.dispatch_table) != _Pickler.copyreg_size:
        _Pickler.dispatch_table = _refusing_table()
        _Pickler.copyreg_size = len(copyreg.dispatch_table)
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=5).dump(value)
    except Exception:
        return value
    blob = buffer.getvalue()
    if len(blob) > _PAYLOAD_LIMIT or _MAIN_MODULE in blob:
        return value
    return blob


class _Refused(Exception):
    """Raised for an object that only Ray's own serialization may pickle (see ``payload_of``)."""


def _refuse(obj: Any) -> Any:
    raise _Refused(type(obj).__name__)


class _Pickler(pickle.Pickler):
    """The C pickler, refusing what Ray must track itself (object refs, actor handles)."""

    dispatch_table: dict[type, Any]
    copyreg_size = -1  # len(copyreg.dispatch_table) when dispatch_table was made


def _refusing_table() -> dict[type, Any]:
    """The pickler's dispatch table: copyreg's, as registered now, and the refusals.

    A plain dict (the C pickler looks a type up in it without calling Python), made again when
    a registration changes the number of copyreg's entries (a reducer registered again for a
    type that had one is not seen: the payload then pickles with the earlier one).
    """
    import ray

    refused: list[Any] = [ray.ObjectRef, ray.actor.ActorHandle]
    try:
        from ray.util.client.common import ClientActorHandle, ClientObjectRef

        refused += [ClientObjectRef, ClientActorHandle]
    except ImportError:  # pragma: no cover - Ray without its client extra
        pass
    return {**copyreg.dispatch_table, **dict.fromkeys(refused, _refuse)}
