"""Access control: API keys with a role, ``read`` or ``admin``.

While no key exists anywhere — none stored (``vivace api-key create``), none in
``VIVACE_API_KEYS`` — the server is open, as a laptop's local server should be. Once one exists,
every request needs a valid key, sent as ``Authorization: Bearer <key>`` or in the cookie
``vivace_api_key`` (which the UI's sign-in page sets). A revoked key still counts as existing:
revoking the last key (say, a leaked one) must not open the server to everyone. For the same
reason a server that has once seen a key stays closed until it restarts, even if the key table
is emptied under it (``vivace db reset``).

- ``/api/*``, ``/metrics`` without a valid key: 401, JSON ``{"detail": ...}``, with
  ``WWW-Authenticate: Bearer`` (clients and scrapers cannot follow a sign-in page);
- any other path (the UI, ``/docs``): a 303 redirect to ``/signin?next=<path>``;
- exempt: ``/api/health``, ``/api/health/live``, ``/signin``, ``/signout`` and ``/static/*``.

An open server started by ``vivace server start`` (``local_hosts_only_while_open``) also refuses,
403, requests whose ``Host`` is a DNS name other than ``localhost``: a page of another site
that points its own name at 127.0.0.1 (DNS rebinding) could otherwise read the run history
through the browser of whoever runs the server. Addresses (``127.0.0.1:4200``) and ``localhost``
work; once a key exists, the key decides.

One ASGI middleware (``install``) decides for every request, so no route can be left open by
forgetting a dependency. Endpoints then declare what they need with ``Depends(require_read)``
or ``Depends(require_admin)``; a read key on an admin endpoint gets a 403.

The server does not ask the database on every request. ``KeyRing`` keeps the roles of the
unrevoked stored keys and reloads them at most every ``KEY_CACHE_SECONDS`` (5 s), so creating the
first key, or revoking one, takes effect within 5 seconds. A key of the stored shape that is not
in the cache is looked up at once by its hash (a new key works immediately), and ``last_used`` is
written at most once a minute per key. Keys are only ever looked up by their SHA-256, never
compared as text, so response times say nothing about how close a guess came.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from vivace.exceptions import StoreError
from vivace.settings import get_settings, secret_value
from vivace.store.api_keys import (
    KEY_CACHE_SECONDS,
    KEY_PREFIX,
    STORED_KEY_LENGTH,
    hash_key,
    mark_keys_used,
    parse_env_api_keys,
    read_key_roles,
    verify_api_key,
)

LAST_USED_EVERY_SECONDS = 60.0
"""How often, at most, one key's ``last_used`` is written."""
COOKIE_NAME = "vivace_api_key"

_EXEMPT_PATHS = frozenset({"/api/health", "/api/health/live", "/signin", "/signout"})
_EXEMPT_PREFIXES = ("/static/",)
_STATE_KEY = "vivace_access"
_ROLE_RANK = {"read": 1, "admin": 2}
_CREATE_HINT = "create one with `vivace api-key create --name NAME --role read|admin`"

_logger = logging.getLogger(__name__)
# Declares the scheme in the OpenAPI document (the "Authorize" button of /docs); the middleware
# does the checking, so a missing header is not an error here.
_BEARER = Depends(
    HTTPBearer(
        auto_error=False,
        description="An API key, when the server has any: `Authorization: Bearer <key>`.",
    )
)


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """What one request may do: nothing is required, or it carries a key with ``role``."""

    required: bool
    role: str | None

    def allows(self, role: str) -> bool:
        """Whether this request may use an endpoint that needs ``role``."""
        if not self.required:
            return True
        return self.role is not None and _ROLE_RANK[self.role] >= _ROLE_RANK[role]


class KeyRing:
    """The keys a server accepts: those of ``VIVACE_API_KEYS`` and a cached copy of the table.

    Thread-safe. ``cached_access`` answers from memory alone, or returns None when the answer
    needs the database, and then ``access`` (called off the event loop) reads or writes it.
    """

    def __init__(
        self,
        database_url: str,
        env_keys: dict[str, str],
        *,
        cache_seconds: float = KEY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database_url = database_url
        self.env_keys = env_keys
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()  # guards the fields below; never held during I/O
        self._reload_lock = threading.Lock()  # one reload at a time, not one per waiting request
        self._stored: dict[str, str | None] | None = None  # read_key_roles(); None: not yet
        self._loaded_at = 0.0
        self._used_at: dict[str, float] = {}  # key hash -> when last_used was last written
        # Set once any key has been seen: from then on the server never opens again by itself.
        self._closed_for_good = bool(env_keys)

    def cached_access(self, key: str | None) -> Access | None:
        """The request's access from memory, or None if the database must be asked."""
        key_hash = None if key is None else hash_key(key)
        if key_hash is not None and key_hash in self.env_keys:  # no database needed
            return Access(required=True, role=self.env_keys[key_hash])
        now = self.clock()
        with self._lock:
            stored = self._stored
            if stored is None or now - self._loaded_at >= self.cache_seconds:
                return None
            if not stored and not self._closed_for_good:
                return Access(required=False, role=None)
            if key is None or key_hash is None:
                return Access(required=True, role=None)
            if key_hash not in stored:  # maybe created since the last reload
                return None if _looks_stored(key) else Access(required=True, role=None)
            role = stored[key_hash]
            if role is None:  # revoked
                return Access(required=True, role=None)
            if now - self._used_at.get(key_hash, float("-inf")) >= LAST_USED_EVERY_SECONDS:
                return None
            return Access(required=True, role=role)

    def access(self, key: str | None) -> Access:
        """The request's access, reloading the table or looking the key up when needed.

        Raises StoreError when the database cannot be read and there is no earlier copy of the
        table to fall back on.
        """
        cached = self.cached_access(key)
        if cached is not None:
            return cached
        stored = self._stored_roles()
        if not stored and not self._closed_for_good:
            return Access(required=False, role=None)
        if key is None:
            return Access(required=True, role=None)
        key_hash = hash_key(key)  # not an environment key: cached_access answers those
        role = stored.get(key_hash)
        if key_hash not in stored and _looks_stored(key):
            role = self._look_up(key, key_hash)
        if role is not None:
            self._mark_used(key_hash)
        return Access(required=True, role=role)

    def _stored_roles(self) -> dict[str, str | None]:
        with self._reload_lock:
            now = self.clock()
            with self._lock:
                if self._stored is not None and now - self._loaded_at < self.cache_seconds:
                    return self._stored  # another request has just reloaded it
                previous = self._stored
            try:
                stored = read_key_roles(self.database_url)
            except StoreError as error:
                if previous is None:
                    raise
                _logger.warning("cannot reload the API keys, using the copy read before: %s", error)
                stored = previous  # and try again after another cache_seconds
            with self._lock:
                self._stored, self._loaded_at = stored, now
                if stored:
                    self._closed_for_good = True
            return stored

    def _look_up(self, key: str, key_hash: str) -> str | None:
        """Ask the table for a key not in the cache (created since the last reload)."""
        role = verify_api_key(self.database_url, key)
        if role is not None:
            with self._lock:
                if self._stored is not None:
                    self._stored = {**self._stored, key_hash: role}
        return role

    def _mark_used(self, key_hash: str) -> None:
        now = self.clock()
        with self._lock:
            if now - self._used_at.get(key_hash, float("-inf")) < LAST_USED_EVERY_SECONDS:
                return
            self._used_at[key_hash] = now
        try:
            mark_keys_used(self.database_url, [key_hash])
        except StoreError as error:  # bookkeeping only: the request goes on
            _logger.warning("cannot record when an API key was last used: %s", error)


def key_ring(app: FastAPI) -> KeyRing:
    """The keys ``app`` accepts (set up by ``install``)."""
    ring: KeyRing = app.state.vivace_key_ring
    return ring


def check_key(request_or_url: Request | str, key: str) -> str | None:
    """The role of ``key`` if the server accepts it, else None: for the UI's sign-in form.

    Given a request, checks against that server's keys; given a database URL, against the keys
    stored there and those of ``VIVACE_API_KEYS``. Reads the table directly, not the cache, so a
    key created a moment ago signs in and one just revoked does not.
    """
    if isinstance(request_or_url, str):
        database_url = request_or_url
        env_keys = parse_env_api_keys(secret_value(get_settings().api_keys))
    else:
        ring = key_ring(request_or_url.app)
        database_url, env_keys = ring.database_url, ring.env_keys
    return env_keys.get(hash_key(key)) or verify_api_key(database_url, key)


async def require_read(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, _BEARER]
) -> None:
    """Dependency of every read endpoint and page: a key with role read or admin, if keys exist."""
    await _require(request, "read")


async def require_admin(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, _BEARER]
) -> None:
    """Dependency of every write endpoint: a key with role admin, if keys exist."""
    await _require(request, "admin")


def install(
    app: FastAPI,
    *,
    cache_seconds: float = KEY_CACHE_SECONDS,
    local_hosts_only_while_open: bool = False,
) -> None:
    """Set up access control on ``app`` (after ``app.state.database_url`` is set).

    Reads ``VIVACE_API_KEYS`` now, so a malformed value stops the server from starting. With
    ``local_hosts_only_while_open``, a server without keys answers only requests addressed to
    ``localhost`` or an IP address (see the module).
    """
    env_keys = parse_env_api_keys(secret_value(get_settings().api_keys))
    ring = KeyRing(app.state.database_url, env_keys, cache_seconds=cache_seconds)
    app.state.vivace_key_ring = ring
    app.add_middleware(
        AccessControlMiddleware,
        ring=ring,
        local_hosts_only_while_open=local_hosts_only_while_open,
    )


class AccessControlMiddleware:
    """Lets a request through, or answers 401, 403, a redirect to /signin, or 503 (see the
    module)."""

    def __init__(
        self, app: ASGIApp, ring: KeyRing, *, local_hosts_only_while_open: bool = False
    ) -> None:
        self.app = app
        self.ring = ring
        self.local_hosts_only_while_open = local_hosts_only_while_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_exempt(route_path(scope)):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        key = presented_key(connection)
        try:
            access = await _access(self.ring, key)
        except StoreError as error:
            await _refuse(scope, receive, send, _unavailable(error))
            return
        if access.required and access.role is None:
            await _refuse(scope, receive, send, _unauthenticated(connection, key))
            return
        host = connection.headers.get("host", "")
        if not access.required and self.local_hosts_only_while_open and not is_local_host(host):
            await _refuse(scope, receive, send, _foreign_host(host))
            return
        scope.setdefault("state", {})[_STATE_KEY] = access
        await self.app(scope, receive, send)


def presented_key(connection: HTTPConnection) -> str | None:
    """The key a request carries: the Bearer token, else the sign-in cookie, else None."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.cookies.get(COOKIE_NAME) or None


async def _access(ring: KeyRing, key: str | None) -> Access:
    """From memory when it can; otherwise off the event loop, as it reads the database."""
    access = ring.cached_access(key)
    if access is None:
        access = await run_in_threadpool(ring.access, key)
    return access


def is_exempt(path: str) -> bool:
    """Whether ``path`` (below the app's root path) is open to everyone, keys or not."""
    return path in _EXEMPT_PATHS or path.startswith(_EXEMPT_PREFIXES)


def is_local_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine (``localhost``) or an address, rather than a
    DNS name that someone else's page could have pointed at this machine."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:4200
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # 127.0.0.1:4200, localhost:4200
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if not name or name == "localhost" or name.endswith(".localhost"):
        return True  # no Host at all: not a browser, which always sends one
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def route_path(scope: Scope) -> str:
    """The request's path below the app's root path (as the routes see it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


def _looks_stored(key: str) -> bool:
    """Whether ``key`` has the shape of a stored key, the only ones worth asking the table for."""
    return len(key) == STORED_KEY_LENGTH and key.startswith(KEY_PREFIX)


async def _require(request: Request, role: str) -> None:
    access: Access | None = request.scope.get("state", {}).get(_STATE_KEY)
    if access is None:
        if is_exempt(route_path(request.scope)):  # the middleware let it through on purpose
            return
        access = await _access(key_ring(request.app), presented_key(request))
    if access.allows(role):
        return
    if access.role is None:
        raise HTTPException(401, _missing_key_detail(request), {"WWW-Authenticate": "Bearer"})
    raise HTTPException(
        403,
        f"this needs an API key with the role {role}; the key sent has the role {access.role}",
    )


def _unauthenticated(connection: HTTPConnection, key: str | None) -> Response:
    path = route_path(connection.scope)
    if path.startswith("/api/") or path == "/metrics" or connection.scope["type"] == "websocket":
        return JSONResponse(
            {"detail": _missing_key_detail(connection) if key is None else _bad_key_detail()},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    url = connection.url
    target = url.path + (f"?{url.query}" if url.query else "")
    root = connection.scope.get("root_path", "")
    return RedirectResponse(f"{root}/signin?{urlencode({'next': target})}", status_code=303)


def _missing_key_detail(connection: HTTPConnection) -> str:
    return (
        f"{connection.url.path} needs an API key: send the header 'Authorization: Bearer <key>' "
        f"({_CREATE_HINT})"
    )


def _bad_key_detail() -> str:
    return f"the API key sent is not valid: unknown or revoked ({_CREATE_HINT})"


def _foreign_host(host: str) -> Response:
    return JSONResponse(
        {
            "detail": (
                f"this server has no API key, so it answers only requests addressed to localhost "
                f"or an IP address, not to {host!r}: a page of another site could otherwise read "
                "the run history through your browser (DNS rebinding); open it as "
                f"http://127.0.0.1:<port>, or {_CREATE_HINT}"
            )
        },
        status_code=403,
    )


def _unavailable(error: StoreError) -> Response:
    return JSONResponse(
        {"detail": f"cannot check the API key, the key table cannot be read: {error}"},
        status_code=503,
    )


async def _refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    if scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
        message: dict[str, Any] = {"type": "websocket.close", "code": 1008}
        await send(message)
        return
    await response(scope, receive, send)
