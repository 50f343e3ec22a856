"""Signing in to the UI with an API key, and signing out.

``POST /signin`` checks the key (``vivace.server.auth.check_key``) and keeps it in the cookie
``vivace_api_key``: HttpOnly (page scripts cannot read it), SameSite=Strict (other sites cannot
make the browser send it), Secure when the page came over HTTPS. The access-control middleware
reads that cookie on every later request. ``next`` is followed only when it is a path on this
server, so a crafted sign-in link cannot send someone elsewhere.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vivace.exceptions import StoreError
from vivace.server import auth
from vivace.server.ui.rendering import SECURITY_HEADERS, render, root_path
from vivace.server.ui.routing import PageRoute

COOKIE_MAX_AGE = 30 * 24 * 3600  # a month; revoking the key ends the session sooner

router = APIRouter(route_class=PageRoute)


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str = "/") -> HTMLResponse:
    """The sign-in form; after signing in, the browser goes to ``next``."""
    return _form(request, next_path=safe_next(request, next))


@router.post("/signin", response_class=HTMLResponse)
def signin(
    request: Request,
    key: Annotated[str, Form(max_length=1000)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the key; if good, keep it in the cookie and go to ``next``."""
    target = safe_next(request, next)
    key = key.strip()
    if not key:
        return _form(request, next_path=target, error="Enter an API key.", status_code=400)
    try:
        role = auth.check_key(request, key)
    except StoreError as error:
        return _form(
            request,
            next_path=target,
            error=f"The key cannot be checked now: the database cannot be used ({error}).",
            status_code=503,
        )
    if role is None:
        return _form(
            request,
            next_path=target,
            error="That key is not valid: it is unknown or has been revoked.",
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        auth.COOKIE_NAME,
        key,
        max_age=COOKIE_MAX_AGE,
        path=root_path(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/signout")
def signout(request: Request) -> Response:
    """Forget the key (clear the cookie) and show the sign-in form."""
    response = RedirectResponse(f"{root_path(request)}/signin", status_code=303)
    response.delete_cookie(
        auth.COOKIE_NAME,
        path=root_path(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def safe_next(request: Request, next_path: str) -> str:
    """``next_path`` if it is a path on this server, else the dashboard."""
    home = f"{root_path(request)}/"
    parts = urlsplit(next_path)
    if (
        parts.scheme
        or parts.netloc
        or not next_path.startswith("/")
        or next_path.startswith("//")
        or "\\" in next_path
        or any(ord(char) < 32 for char in next_path)
    ):
        return home
    return next_path


def _form(
    request: Request, *, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "signin.html",
        {"next_path": next_path, "error": error, "keys_required": _keys_required(request)},
        status_code=status_code,
    )


def _keys_required(request: Request) -> bool | None:
    """Whether this server asks for keys at all (None: cannot tell, the database is down)."""
    try:
        return auth.key_ring(request.app).access(None).required
    except StoreError:
        return None
