"""Access control: the API key store, and the server's rules for keys, roles, pages and caching."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

from vivace.exceptions import ConfigurationError
from vivace.server import auth
from vivace.server.app import create_app
from vivace.settings import reset_settings
from vivace.store import schema
from vivace.store.api_keys import (
    KEY_CACHE_SECONDS,
    create_api_key,
    hash_key,
    list_api_keys,
    revoke_api_key,
    verify_api_key,
)
from vivace.store.database import get_engine, transaction

ENV_READ_KEY = "env-read-key-0123456789"
ENV_ADMIN_KEY = "env-admin-key-0123456789"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_client(app: FastAPI) -> Any:
    with warnings.catch_warnings():
        # Starlette's TestClient warns once, on import, that it falls back to httpx.
        warnings.filterwarnings(
            "ignore", "Using `httpx` with `starlette.testclient`", category=UserWarning
        )
        from fastapi.testclient import TestClient
    return TestClient(app, follow_redirects=False)


def app_with_test_routes(database_url: str) -> FastAPI:
    """The real app plus three routes of the test's own: a read, an admin, and a UI page."""
    app = create_app(database_url)

    def read_something() -> dict[str, str]:
        return {"read": "ok"}

    def change_something() -> dict[str, str]:
        return {"changed": "ok"}

    def page() -> HTMLResponse:
        return HTMLResponse("<p>a page</p>")

    app.add_api_route("/api/test-read", read_something, dependencies=[Depends(auth.require_read)])
    app.add_api_route(
        "/api/test-admin",
        change_something,
        methods=["POST"],
        dependencies=[Depends(auth.require_admin)],
    )
    app.add_api_route("/test-page", page, dependencies=[Depends(auth.require_read)])
    return app


@pytest.fixture
def app(database_url: str) -> FastAPI:
    return app_with_test_routes(database_url)


@pytest.fixture
def client(app: FastAPI) -> Iterator[Any]:
    with make_client(app) as client:
        yield client


@pytest.fixture
def clock(app: FastAPI, client: Any) -> FakeClock:
    """The clock of the running app's key cache, moved by hand."""
    clock = FakeClock()
    auth.key_ring(app).clock = clock
    return clock


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- the key store ------------------------------------------------------------------------------


def test_a_created_key_is_stored_only_as_its_hash(database_url: str) -> None:
    record, key = create_api_key(database_url, "ci", "read")

    assert key.startswith("vvc_") and len(key) == 47
    assert record.prefix == key[:12] and record.role == "read" and record.revoked is None
    engine = get_engine(database_url)
    with engine.connect() as conn:
        (row,) = conn.execute(sa.select(schema.api_keys)).mappings()
    assert row["key_hash"] == hash_key(key)
    assert key not in {str(value) for value in row.values()}
    assert verify_api_key(database_url, key) == "read"
    assert verify_api_key(database_url, key + "x") is None
    assert [listed.name for listed in list_api_keys(database_url)] == ["ci"]


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        pytest.param(
            "ci", "owner", "role 'owner' is not a role; expected read or admin", id="role"
        ),
        pytest.param("", "read", "expected 1 to 255 characters", id="empty-name"),
        pytest.param(" ci", "read", "spaces around it", id="padded-name"),
        pytest.param("c\ni", "read", "control characters", id="control-character"),
    ],
)
def test_bad_names_and_roles_are_refused(
    database_url: str, name: str, role: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_api_key(database_url, name, role)
    assert list_api_keys(database_url) == []


def test_a_name_is_used_once_even_after_revoking(database_url: str) -> None:
    create_api_key(database_url, "ci", "read")
    revoke_api_key(database_url, "ci")
    with pytest.raises(ConfigurationError, match=r"'ci' already exists \(revoked\)"):
        create_api_key(database_url, "ci", "admin")


def test_revoke_by_name_or_prefix(database_url: str) -> None:
    first, first_key = create_api_key(database_url, "first", "read")
    second, second_key = create_api_key(database_url, "second", "admin")

    revoked = revoke_api_key(database_url, second.prefix)
    assert revoked is not None and revoked.name == "second" and revoked.revoked is not None
    assert verify_api_key(database_url, second_key) is None
    assert verify_api_key(database_url, first_key) == "read"
    again = revoke_api_key(database_url, "second")
    assert again is not None and again.revoked == revoked.revoked  # revoking twice: no change
    assert revoke_api_key(database_url, "nobody") is None

    # A prefix two keys share (not likely with 48 random bits, but possible) names neither.
    with transaction(get_engine(database_url)) as conn:
        conn.execute(
            schema.api_keys.update()
            .where(schema.api_keys.c.name == "second")
            .values(prefix=first.prefix)
        )
    with pytest.raises(ConfigurationError, match="belongs to several keys"):
        revoke_api_key(database_url, first.prefix)


# -- the server's rules -------------------------------------------------------------------------


def test_everything_is_open_while_no_key_exists(client: Any) -> None:
    assert client.get("/api/test-read").status_code == 200
    assert client.post("/api/test-admin").status_code == 200
    assert client.get("/test-page").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200


def test_an_open_server_of_the_cli_answers_only_requests_addressed_to_this_machine(
    database_url: str,
) -> None:
    # DNS rebinding: a page of attacker.example points its name at 127.0.0.1, and its script
    # reads http://attacker.example:4200/api/... through the browser; the Host header says so.
    with make_client(create_app(database_url, local_hosts_only_while_open=True)) as client:
        rebound = client.get("/api/flow-runs", headers={"Host": "attacker.example:4200"})
        assert rebound.status_code == 403
        assert "DNS rebinding" in rebound.json()["detail"]
        assert "'attacker.example:4200'" in rebound.json()["detail"]
        assert client.get("/", headers={"Host": "attacker.example"}).status_code == 403
        for host in ["127.0.0.1:4200", "localhost:4200", "LOCALHOST.", "[::1]:4200", "10.0.0.5"]:
            assert client.get("/api/flow-runs", headers={"Host": host}).status_code == 200, host
        assert client.get("/api/health", headers={"Host": "attacker.example"}).status_code == 200

    # Once a key exists, the key decides, whatever name the server is reached by.
    _, key = create_api_key(database_url, "ci", "read")
    with make_client(create_app(database_url, local_hosts_only_while_open=True)) as client:
        headers = {"Host": "vivace.example.com", **bearer(key)}
        assert client.get("/api/flow-runs", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("host", "local"),
    [
        pytest.param("localhost", True, id="localhost"),
        pytest.param("app.localhost:80", True, id="dot-localhost"),
        pytest.param("127.0.0.1", True, id="ipv4"),
        pytest.param("[::1]:4200", True, id="ipv6"),
        pytest.param("", True, id="no-host-header"),
        pytest.param("localhost.attacker.example", False, id="lookalike"),
        pytest.param("127.0.0.1.nip.io", False, id="name-of-an-address"),
        pytest.param("[attacker.example]", False, id="name-in-brackets"),
    ],
)
def test_local_host_names(host: str, local: bool) -> None:
    assert auth.is_local_host(host) is local


def test_once_a_key_exists_every_path_needs_one(database_url: str, client: Any) -> None:
    create_api_key(database_url, "ci", "read")

    for method, path in [
        ("GET", "/api/test-read"),
        ("POST", "/api/test-admin"),
        ("GET", "/api/openapi.json"),
        ("GET", "/metrics"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["detail"].startswith(f"{path} needs an API key")
    page = client.get("/test-page", params={"tab": "logs"})
    assert page.status_code == 303
    assert page.headers["location"] == "/signin?next=%2Ftest-page%3Ftab%3Dlogs"
    assert client.get("/docs").headers["location"] == "/signin?next=%2Fdocs"
    # Exempt: the health check, the sign-in page, static files (a missing one is a 404, not a
    # redirect to sign in).
    assert client.get("/api/health").status_code == 200
    assert client.get("/signin").status_code == 200
    assert client.get("/static/no-such-file.css").status_code == 404


def test_a_key_is_accepted_as_bearer_token_or_cookie(database_url: str, client: Any) -> None:
    _, key = create_api_key(database_url, "ci", "read")

    assert client.get("/api/test-read", headers=bearer(key)).json() == {"read": "ok"}
    client.cookies.set(auth.COOKIE_NAME, key)
    assert client.get("/test-page").status_code == 200
    client.cookies.clear()

    wrong = client.get("/api/test-read", headers=bearer("vvc_" + "x" * 43))
    assert wrong.status_code == 401
    assert wrong.json()["detail"].startswith("the API key sent is not valid")
    basic = client.get("/api/test-read", headers={"Authorization": f"Basic {key}"})
    assert basic.status_code == 401
    client.cookies.set(auth.COOKIE_NAME, "not-a-key")
    assert client.get("/test-page").status_code == 303


def test_a_read_key_cannot_use_an_admin_endpoint(database_url: str, client: Any) -> None:
    _, read_key = create_api_key(database_url, "dashboard", "read")
    _, admin_key = create_api_key(database_url, "ops", "admin")

    refused = client.post("/api/test-admin", headers=bearer(read_key))
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "this needs an API key with the role admin; the key sent has the role read"
    }
    assert client.post("/api/test-admin", headers=bearer(admin_key)).status_code == 200
    assert client.get("/api/test-read", headers=bearer(admin_key)).status_code == 200


def test_a_revoked_key_is_refused_once_the_cache_expires(
    database_url: str, client: Any, clock: FakeClock
) -> None:
    _, key = create_api_key(database_url, "ci", "read")
    assert client.get("/api/test-read", headers=bearer(key)).status_code == 200

    revoke_api_key(database_url, "ci")
    clock.now += KEY_CACHE_SECONDS - 0.5
    assert client.get("/api/test-read", headers=bearer(key)).status_code == 200  # as documented
    clock.now += 0.5
    assert client.get("/api/test-read", headers=bearer(key)).status_code == 401
    # It was the only key, and the server stays closed: revoking must never open it.
    assert client.get("/api/test-read").status_code == 401


def test_a_server_that_has_seen_a_key_stays_closed_when_the_key_table_is_emptied(
    database_url: str, client: Any, clock: FakeClock
) -> None:
    _, key = create_api_key(database_url, "ci", "read")
    assert client.get("/api/test-read", headers=bearer(key)).status_code == 200

    with transaction(get_engine(database_url)) as conn:  # as `vivace db reset` would leave it
        conn.execute(schema.api_keys.delete())
    clock.now += KEY_CACHE_SECONDS

    assert client.get("/api/test-read").status_code == 401
    assert client.get("/api/test-read", headers=bearer(key)).status_code == 401


def test_a_new_key_works_at_once_and_the_first_key_closes_within_the_cache_time(
    database_url: str, client: Any, clock: FakeClock
) -> None:
    assert client.get("/api/test-read").status_code == 200  # loads the (empty) table

    _, first = create_api_key(database_url, "first", "read")
    assert client.get("/api/test-read").status_code == 200  # still open: the cached table
    clock.now += KEY_CACHE_SECONDS
    assert client.get("/api/test-read").status_code == 401
    assert client.get("/api/test-read", headers=bearer(first)).status_code == 200

    _, second = create_api_key(database_url, "second", "read")  # the cache is fresh
    assert client.get("/api/test-read", headers=bearer(second)).status_code == 200


def test_last_used_is_written_at_most_once_a_minute(
    database_url: str, client: Any, clock: FakeClock
) -> None:
    _, key = create_api_key(database_url, "ci", "read")

    def last_used() -> dt.datetime | None:
        (record,) = list_api_keys(database_url)
        return record.last_used

    assert last_used() is None
    client.get("/api/test-read", headers=bearer(key))
    first = last_used()
    assert first is not None
    clock.now += auth.LAST_USED_EVERY_SECONDS - 1
    client.get("/api/test-read", headers=bearer(key))
    assert last_used() == first
    clock.now += 1
    client.get("/api/test-read", headers=bearer(key))
    later = last_used()
    assert later is not None and later > first


def test_keys_from_the_environment(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVACE_API_KEYS", f"read:{ENV_READ_KEY}, admin:{ENV_ADMIN_KEY}")
    reset_settings()
    with make_client(app_with_test_routes(database_url)) as client:
        assert client.get("/api/test-read").status_code == 401
        assert client.get("/api/test-read", headers=bearer(ENV_READ_KEY)).status_code == 200
        assert client.post("/api/test-admin", headers=bearer(ENV_READ_KEY)).status_code == 403
        assert client.post("/api/test-admin", headers=bearer(ENV_ADMIN_KEY)).status_code == 200
    assert list_api_keys(database_url) == []  # never stored


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("justakey0123456789", "entry 1 is not ROLE:KEY", id="no-role"),
        pytest.param(f"read:{ENV_READ_KEY},", "entry 2 is not ROLE:KEY", id="trailing-comma"),
        pytest.param(f"owner:{ENV_READ_KEY}", "entry 1 has the role 'owner'", id="unknown-role"),
        pytest.param(
            "read:short", "entry 1 has a key of 5 characters; expected at least 16", id="short-key"
        ),
        pytest.param("read:has a space 0123456789", "entry 1 has a space in its key", id="space"),
    ],
)
def test_a_malformed_environment_value_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("VIVACE_API_KEYS", value)
    reset_settings()
    with pytest.raises(ConfigurationError, match=f"VIVACE_API_KEYS {message}"):
        create_app()


def test_check_key_for_the_sign_in_form(
    database_url: str, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = create_api_key(database_url, "ci", "admin")
    request = Request({"type": "http", "app": app, "headers": []})

    assert auth.check_key(request, key) == "admin"
    assert auth.check_key(database_url, key) == "admin"
    assert auth.check_key(request, "vvc_unknown") is None
    revoke_api_key(database_url, "ci")
    assert auth.check_key(request, key) is None  # no cache: a revoked key cannot sign in
    monkeypatch.setenv("VIVACE_API_KEYS", f"read:{ENV_READ_KEY}")
    reset_settings()
    assert auth.check_key(database_url, ENV_READ_KEY) == "read"


def test_an_unreachable_database_is_a_503_unless_an_environment_key_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    with make_client(app_with_test_routes(unreachable)) as client:
        response = client.get("/api/test-read")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("cannot check the API key, the key table")

    monkeypatch.setenv("VIVACE_API_KEYS", f"read:{ENV_READ_KEY}")
    reset_settings()
    with make_client(app_with_test_routes(unreachable)) as client:
        assert client.get("/api/test-read", headers=bearer(ENV_READ_KEY)).status_code == 200
        assert client.get("/api/test-read", headers=bearer("vvc_" + "x" * 43)).status_code == 503


def test_the_key_table_read_before_is_used_while_the_database_is_down(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = create_api_key(database_url, "ci", "read")
    clock = FakeClock()
    ring = auth.KeyRing(database_url, {}, clock=clock)
    assert ring.access(key) == auth.Access(required=True, role="read")

    ring.database_url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # the database goes
    clock.now += KEY_CACHE_SECONDS
    assert ring.access(key) == auth.Access(required=True, role="read")
    assert ring.access(None) == auth.Access(required=True, role=None)
    assert "cannot reload the API keys, using the copy read before" in caplog.text
