"""How a UI page fails: as an HTML page that says what went wrong, never as a 500.

Page handlers raise :class:`PageError` (an unknown id, a bad filter value); the store's helpers
raise ``ConfigurationError`` for input they cannot use (a cursor from another list, say) and
``StoreUnavailableError`` when the database cannot be reached. :class:`PageRoute`, the route
class of every page, turns all three into the error page with a 4xx (or 503) status, so the
JSON error handlers of the API never see a page's errors. :class:`LiveRoute` does the same for
the small JSON endpoints a running flow's page polls, answering ``{"detail": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from vivace.exceptions import ConfigurationError, StoreUnavailableError
from vivace.server.ui.rendering import render_error


class PageError(Exception):
    """A page cannot be shown: ``status_code`` and a message for the person who asked."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Respond = Callable[[Request, int, str], Response]


def _answering_errors(handle: Handler, respond: Respond) -> Handler:
    """``handle``, its expected failures answered by ``respond(request, status, text)``."""

    async def handle_request(request: Request) -> Response:
        try:
            return await handle(request)
        except PageError as error:
            return respond(request, error.status_code, error.message)
        except ConfigurationError as error:
            return respond(request, 400, str(error))
        except RequestValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                for problem in error.errors()
            )
            return respond(request, 400, problems)
        except StoreUnavailableError as error:
            return respond(request, 503, f"the run-history database cannot be used: {error}")

    return handle_request


class PageRoute(APIRoute):
    """A page's route: its failures render the HTML error page."""

    def get_route_handler(self) -> Handler:
        return _answering_errors(super().get_route_handler(), render_error)


class LiveRoute(APIRoute):
    """A live-update endpoint's route: its failures answer JSON ``{"detail": ...}``."""

    def get_route_handler(self) -> Handler:
        return _answering_errors(super().get_route_handler(), _json_error)


def _json_error(request: Request, status_code: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=status_code)
