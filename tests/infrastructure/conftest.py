"""Fixtures of the infrastructure tests; ``stub_api`` is described in ``stub_api.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stub_api import StubAPI, serve_stub_api


@pytest.fixture
def stub_api() -> Iterator[StubAPI]:
    yield from serve_stub_api()
