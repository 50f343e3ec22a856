"""API keys: who may read the run history through the server, and who may change it.

A key is ``vvc_`` followed by 43 random URL-safe characters (32 bytes from ``secrets``). It is
shown once, when created; the table keeps only its SHA-256 and its first characters (the
``prefix``, which tells keys apart in a listing). Each key has a role:

- ``read``: every page and read endpoint, /docs and /metrics;
- ``admin``: all of that, and the endpoints that change things.

Besides the stored keys, ``VIVACE_API_KEYS`` may list keys as comma-separated ``ROLE:KEY`` pairs
(``parse_env_api_keys``), for deployments that hand secrets in through the environment.

Example::

    record, key = create_api_key(url, "ci", "read")   # show `key` to the user once
    assert verify_api_key(url, key) == "read"
    revoke_api_key(url, "ci")
    assert verify_api_key(url, key) is None
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import time
import uuid
from typing import Any

import sqlalchemy as sa

from vivace._ids import uuid7
from vivace.exceptions import ConfigurationError
from vivace.store import schema
from vivace.store.database import connect, ensure_schema, get_engine, transaction

Bind = sa.Engine | str
"""An engine, or a database URL whose cached engine to use."""

ROLES = ("read", "admin")
KEY_CACHE_SECONDS = 5.0
"""How long a server keeps using its copy of the key table: the delay of a revocation."""
KEY_PREFIX = "vvc_"
_TOKEN_BYTES = 32
# token_urlsafe(32) is 43 characters: what every stored key looks like, so a presented key of
# another shape can be refused without asking the database.
STORED_KEY_LENGTH = len(KEY_PREFIX) + 43
_SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8  # 48 random bits: enough to tell keys apart
_MAX_NAME_LENGTH = 255
MIN_ENV_KEY_LENGTH = 16


@dataclasses.dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key, without the key: the key itself is never kept."""

    id: uuid.UUID
    name: str
    role: str
    prefix: str
    created: dt.datetime
    last_used: dt.datetime | None
    revoked: dt.datetime | None


def hash_key(key: str) -> str:
    """The SHA-256 of ``key``, hex: what the table stores and what lookups use.

    A fast hash is right here, unlike for passwords: a stored key is 256 random bits, so there is
    no dictionary to try and nothing a slow hash (bcrypt, scrypt) would protect better, and a fast
    one lets every request be checked without a noticeable cost.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def check_role(role: str) -> str:
    """``role`` if it is a role, else a ConfigurationError that names the roles."""
    if role not in ROLES:
        raise ConfigurationError(f"API key role {role!r} is not a role; expected read or admin")
    return role


def create_api_key(bind: Bind, name: str, role: str) -> tuple[ApiKeyRecord, str]:
    """Create a key named ``name`` with ``role``; return its record and the key itself.

    The key is returned only here: only its hash is stored.
    """
    name = _check_name(name)
    check_role(role)
    key = KEY_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    record = ApiKeyRecord(
        id=uuid7(),
        name=name,
        role=role,
        prefix=key[:_SHOWN_PREFIX_LENGTH],
        created=dt.datetime.now(dt.UTC),
        last_used=None,
        revoked=None,
    )
    engine = _engine(bind)
    table = schema.api_keys
    try:
        with transaction(engine) as conn:
            taken = conn.execute(sa.select(table.c.revoked).where(table.c.name == name)).first()
            if taken is not None:
                state = " (revoked)" if taken.revoked is not None else ""
                raise ConfigurationError(
                    f"an API key named {name!r} already exists{state}; expected a new name"
                )
            conn.execute(table.insert(), {**dataclasses.asdict(record), "key_hash": hash_key(key)})
    except sa.exc.IntegrityError:  # the same name, created by someone else a moment ago
        raise ConfigurationError(
            f"an API key named {name!r} already exists; expected a new name"
        ) from None
    return record, key


def list_api_keys(bind: Bind) -> list[ApiKeyRecord]:
    """Every stored key, revoked ones included, oldest first."""
    table = schema.api_keys
    query = sa.select(*_record_columns()).order_by(table.c.created, table.c.id)
    engine = _engine(bind)
    with connect(engine) as conn:
        return [ApiKeyRecord(**row._mapping) for row in conn.execute(query)]


def revoke_api_key(bind: Bind, name_or_prefix: str) -> ApiKeyRecord | None:
    """Revoke the key with this name, or else the one with this prefix; None if there is none.

    A key already revoked is returned as it is (revoking twice changes nothing). A prefix that
    several keys share is refused: the name says which one.
    """
    table = schema.api_keys
    engine = _engine(bind)
    with transaction(engine) as conn:
        for column in (table.c.name, table.c.prefix):
            rows = conn.execute(sa.select(*_record_columns()).where(column == name_or_prefix))
            matches = [ApiKeyRecord(**row._mapping) for row in rows]
            if matches:
                break
        else:
            return None
        if len(matches) > 1:
            names = ", ".join(repr(match.name) for match in matches)
            raise ConfigurationError(
                f"API key prefix {name_or_prefix!r} belongs to several keys ({names}); "
                "expected the name of the key to revoke"
            )
        (record,) = matches
        if record.revoked is not None:
            return record
        now = dt.datetime.now(dt.UTC)
        conn.execute(table.update().where(table.c.id == record.id).values(revoked=now))
    return dataclasses.replace(record, revoked=now)


def verify_api_key(bind: Bind, key: str) -> str | None:
    """The role of ``key`` if it is a stored key that is not revoked, else None.

    The key is looked up by its hash (a unique index), so no stored value is ever compared with
    the key itself, and the time taken says nothing about how close a guess came.
    """
    table = schema.api_keys
    query = sa.select(table.c.role).where(
        table.c.key_hash == hash_key(key), table.c.revoked.is_(None)
    )
    engine = _engine(bind)
    with connect(engine) as conn:
        role: str | None = conn.execute(query).scalar()
    return role


def read_key_roles(bind: Bind) -> dict[str, str | None]:
    """``{key hash: role}`` of every stored key, None for a revoked one: what a server caches.

    Revoked keys are in it so that a server knows keys exist even when every one is revoked:
    revoking a leaked last key must not open the server to everyone.
    """
    table = schema.api_keys
    query = sa.select(table.c.key_hash, table.c.role, table.c.revoked)
    engine = _engine(bind)
    with connect(engine) as conn:
        return {
            key_hash: None if revoked is not None else role
            for key_hash, role, revoked in conn.execute(query)
        }


def mark_keys_used(bind: Bind, key_hashes: list[str], when: float | None = None) -> None:
    """Set ``last_used`` of these keys to ``when`` (Unix seconds, default now)."""
    if not key_hashes:
        return
    table = schema.api_keys
    engine = _engine(bind)
    with transaction(engine) as conn:
        conn.execute(
            table.update()
            .where(table.c.key_hash.in_(key_hashes))
            .values(last_used=time.time() if when is None else when)
        )


def parse_env_api_keys(value: str | None) -> dict[str, str]:
    """``{key hash: role}`` of the keys in ``VIVACE_API_KEYS`` (``ROLE:KEY`` pairs, commas between).

    Raises a ConfigurationError naming the variable for a pair that is not ``ROLE:KEY``, an
    unknown role, or a key shorter than 16 characters (a key anyone could guess).
    """
    keys: dict[str, str] = {}
    if not value or not value.strip():
        return keys
    for position, pair in enumerate(value.split(","), start=1):
        role, colon, key = pair.strip().partition(":")
        where = f"VIVACE_API_KEYS entry {position}"
        if not colon or not key:
            raise ConfigurationError(
                f"{where} is not ROLE:KEY; expected comma-separated pairs such as "
                "read:<key>,admin:<key>"
            )
        if role not in ROLES:
            raise ConfigurationError(
                f"{where} has the role {role!r}; expected read or admin before the colon"
            )
        if any(character.isspace() for character in key):
            raise ConfigurationError(f"{where} has a space in its key; expected a key without")
        if len(key) < MIN_ENV_KEY_LENGTH:
            raise ConfigurationError(
                f"{where} has a key of {len(key)} characters; expected at least "
                f"{MIN_ENV_KEY_LENGTH} random characters, e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        keys[hash_key(key)] = role
    return keys


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"API key name {name!r} is not a name; expected 1 to {_MAX_NAME_LENGTH} characters"
        )
    if not name.isprintable() or name != name.strip():
        raise ConfigurationError(
            f"API key name {name!r} has spaces around it or control characters; expected a "
            "plain name such as 'ci' or 'grafana'"
        )
    return name


def _record_columns() -> list[sa.Column[Any]]:
    table = schema.api_keys
    return [table.c[field.name] for field in dataclasses.fields(ApiKeyRecord)]


def _engine(bind: Bind) -> sa.Engine:
    """The engine, its schema made current (the key table may be new)."""
    engine = get_engine(bind) if isinstance(bind, str) else bind
    ensure_schema(engine)
    return engine
