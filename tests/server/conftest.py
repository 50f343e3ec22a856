"""Fixtures for the server's tests.

- ``api``: a ``TestClient`` (in-process, no socket) of a server over the test's ``database_url``,
  so each test using it runs on SQLite and on PostgreSQL.
- ``live_server`` (tests/conftest.py): a real uvicorn server over the same database.
"""

from __future__ import annotations

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
