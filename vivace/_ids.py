"""Time-ordered run ids (UUID version 7).

Ids that grow with time keep the database's primary-key indexes append-only, which is what makes
batched inserts cheap; random UUID4 keys scatter every insert across the B-tree.
"""

from __future__ import annotations

import random
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT_RFC4122 = 0x2 << 62
_RAND_A_MASK = (1 << 12) - 1
_RAND_B_MASK = (1 << 62) - 1
_new_uuid = object.__new__
_set = object.__setattr__


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    # `random` is reseeded after fork by CPython, so forked workers never repeat ids.
    bits = random.getrandbits(74)
    value = (
        (time.time_ns() // 1_000_000) << 80
        | _VERSION_7
        | ((bits >> 62) & _RAND_A_MASK) << 64
        | _VARIANT_RFC4122
        | (bits & _RAND_B_MASK)
    )
    # Skips UUID.__init__'s argument checks, a third of the cost of making an id.
    made = _new_uuid(uuid.UUID)
    _set(made, "int", value)
    _set(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def id_from_bytes(value: bytes) -> uuid.UUID:
    """The UUID of 16 bytes that vivace itself made (``UUID(bytes=...)`` without its checks)."""
    made = _new_uuid(uuid.UUID)
    _set(made, "int", int.from_bytes(value, "big"))
    _set(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def parse_id(value: str | uuid.UUID, what: str = "run id") -> uuid.UUID:
    """Parse a user-given id, with an error that names what was expected."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        from vivace.exceptions import ConfigurationError

        raise ConfigurationError(
            f"{what} {value!r} is not a valid id; expected a UUID such as "
            "'0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b'"
        ) from None
