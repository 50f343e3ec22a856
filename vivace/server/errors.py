"""Error responses: every bad request is a 4xx with a clear message, never a 500.

All errors are JSON ``{"detail": "<one sentence>"}``:

- a parameter FastAPI cannot validate (a malformed id, a limit out of range, an unknown state
  type or sort): 422, naming the parameter, the value and what was expected;
- ``ConfigurationError`` from the store's helpers (a cursor of another list, a naive time...) and
  a value the database refuses to compare (``DataError``): 422;
- ``StoreUnavailableError``: 503, the reason logged rather than shown (it names the database);
- anything else: 500 ``"internal error"``, with the traceback in the server's log only.

Unknown ids are answered 404 by the routes themselves.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vivace.exceptions import ConfigurationError, StoreUnavailableError

_logger = logging.getLogger(__name__)
_SHOWN_INPUT = 80  # characters of a bad value quoted back
_WHERE = {
    "query": "query parameter",
    "path": "path parameter",
    "header": "header",
    "cookie": "cookie",
    "body": "request body",
}
_UUID_EXAMPLE = "0190f6f1-7c2a-7b4e-9a51-4c8f1e2d3a4b"
UNAVAILABLE = "the run-history database cannot be reached now; the server's log says why"


def install(app: FastAPI) -> None:
    """Register the exception handlers and the last-resort 500 middleware on ``app``."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ConfigurationError, _bad_value)
    app.add_exception_handler(sa.exc.DataError, _value_the_database_refuses)
    app.add_exception_handler(StoreUnavailableError, _database_unavailable)
    app.add_middleware(InternalErrorMiddleware)
    # The last resort, for a failure in a middleware added after this one (outside it): the
    # same answer, though Starlette then re-raises the exception to the server, which logs it.
    app.add_exception_handler(Exception, _internal_error)


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One readable sentence for pydantic's errors, each naming its parameter and value."""
    return "; ".join(_describe(error) for error in errors) or "the request is not valid"


class InternalErrorMiddleware:
    """Turns an unexpected exception into 500 ``{"detail": "internal error"}`` and logs it.

    A plain ASGI middleware, so the exception ends here: the traceback is logged once, and the
    client learns nothing of the server's insides. A response already started (a download that
    fails midway) cannot be replaced; the exception then goes on and the server drops the
    connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception:
            if started:
                raise
            _logger.exception("internal error answering %s %s", scope["method"], scope["path"])
            response = JSONResponse({"detail": "internal error"}, status_code=500)
            await response(scope, receive, send)


# -- handlers -----------------------------------------------------------------------------------


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    _logger.error(
        "internal error answering %s %s", request.method, request.url.path, exc_info=error
    )
    return _json(500, "internal error")


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return _json(422, describe_validation_errors(list(error.errors())))


async def _bad_value(_request: Request, error: Exception) -> JSONResponse:
    return _json(422, str(error))


async def _value_the_database_refuses(request: Request, error: Exception) -> JSONResponse:
    _logger.info("the database refused a value of %s: %s", request.url.path, error)
    return _json(
        422,
        "a parameter holds a value the database cannot compare (such as a NUL character or a "
        "number out of range); expected ordinary text and numbers",
    )


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    _logger.warning("cannot answer %s: %s", request.url.path, error)
    return _json(503, UNAVAILABLE)


def _json(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


# -- messages -----------------------------------------------------------------------------------


def _describe(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ())]
    where = _WHERE.get(location[0], location[0]) if location else "parameter"
    name = location[1] if len(location) > 1 else ""
    item = f" (item {int(location[2]) + 1})" if len(location) > 2 and location[2].isdigit() else ""
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        return f"{where} {name!r} is required"
    value = _shown(error.get("input"))
    if str(error.get("type", "")).startswith("uuid_"):
        what = name.removesuffix("_id").replace("_", " ")
        return f"{what} id {value} is not a valid id; expected a UUID such as {_UUID_EXAMPLE!r}"
    return f"{where} {name!r}{item} = {value}: {message}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 3] + "..."
