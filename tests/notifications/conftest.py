"""Fixtures of the notification tests.

- ``receiver``: a real HTTP server on 127.0.0.1 (a thread of the test process) that records every
  request it gets and answers 200, or, in order, the statuses queued with ``answer(...)`` first
  (``answer(500, 500)`` fails the next two requests); ``url`` is its address.
- ``api``: a ``TestClient`` of a server over the test's ``database_url``.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest


@dataclasses.dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """The requests a test webhook got, and the statuses it answers next."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._statuses: list[int] = []
        self._headers: dict[str, str] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def answer(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next requests with these statuses (then 200 again)."""
        with self._lock:
            self._statuses.extend(statuses)
            self._headers = dict(headers or {})

    def bodies(self) -> list[Any]:
        with self._lock:
            return [request.body for request in self.requests]

    def _record(self, request: Received) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.requests.append(request)
            status = self._statuses.pop(0) if self._statuses else 200
            return status, self._headers if status != 200 else {}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    receiver: Receiver

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        status, headers = self.receiver._record(
            Received(self.command, self.path, dict(self.headers.items()), body)
        )
        text = b"ok" if status == 200 else b"the receiver says no"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_POST = do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()
