"""Fixtures for the server's tests.

- ``api``: a ``TestClient`` (in-process, no socket) of a server over the test's ``database_url``,
  so each test using it runs on SQLite and on PostgreSQL.
- ``live_server``: a real uvicorn server on 127.0.0.1 (a free port) over the same database, in a
  thread of the test process; its base URL, e.g. ``http://127.0.0.1:41234``. For browser tests,
  schemathesis and anything that needs a socket.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator

import pytest


@pytest.fixture
def api(database_url: str) -> Iterator[object]:
    with warnings.catch_warnings():
        # Starlette 1.x's TestClient prefers httpx2 and warns (once, on import) that it falls
        # back to httpx, which the dev extra pins; the fallback works as before.
        warnings.filterwarnings(
            "ignore", "Using `httpx` with `starlette.testclient`", category=UserWarning
        )
        from fastapi.testclient import TestClient

    from vivace.server.app import create_app

    with TestClient(create_app(database_url)) as client:
        yield client


@pytest.fixture
def live_server(database_url: str) -> Iterator[str]:
    yield from serve(database_url)


def serve(database_url: str) -> Iterator[str]:
    """Run a server over ``database_url`` on a free loopback port until the generator closes."""
    import uvicorn

    from vivace.server.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(database_url), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
