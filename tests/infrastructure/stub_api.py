"""A stub HTTP API on 127.0.0.1 for the infrastructure tests that have no real engine.

No Docker engine or Kubernetes cluster runs here. ``stub_api`` stands in for one: a threaded
HTTP server that answers the requests a test routes (method + path regex -> handler) and records
every request, so a test drives the real docker or kubernetes SDK over a real socket and checks
what it sent. It is a stub, not an engine: what it answers is what the test says.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


Handler = Callable[[re.Match[str], Request], tuple[int, Any]]


@dataclass
class StubAPI:
    url: str
    routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.insert(0, (method, re.compile(pattern), handler))  # the latest route wins

    def sent(self, method: str, pattern: str) -> list[Request]:
        """The recorded requests of that method whose path matches ``pattern``."""
        return [
            request
            for request in self.requests
            if request.method == method and re.fullmatch(pattern, request.path)
        ]


def serve_stub_api() -> Iterator[StubAPI]:
    """A StubAPI on a free loopback port until the generator closes."""
    api: StubAPI

    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                urllib.parse.unquote(parsed.path),
                dict(urllib.parse.parse_qsl(parsed.query)),
                json.loads(raw) if raw else None,
            )
            api.requests.append(request)
            status, payload = 404, {"message": f"no route for {self.command} {parsed.path}"}
            for method, pattern, handler in api.routes:
                match = pattern.fullmatch(request.path)
                if method == self.command and match:
                    status, payload = handler(match, request)
                    break
            data = b"" if status == 204 else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    server.daemon_threads = True
    api = StubAPI(url=f"127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="stub-api", daemon=True
    )
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def unused_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
