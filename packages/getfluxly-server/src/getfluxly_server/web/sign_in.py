"""Signing in and out, the home page, and the dashboard's static files.

The sign-in form has no session yet, so its CSRF protection is a double submit: a random
token in a cookie (``gf_login_csrf``, HttpOnly, SameSite=Strict) and the same token in the
form; a post whose two do not match is refused before any password is checked. A success
sets the session cookie (HttpOnly, SameSite=Lax; Secure over HTTPS, and whenever
``GETFLUXLY_PUBLIC_URL`` is an https:// address) and goes to ``next``
(a path on this server only: never another site).
"""

from __future__ import annotations

import hmac
import secrets
from importlib import resources
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse

from getfluxly_server.api.deps import database, settings
from getfluxly_server.domain import tenancy, users
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.web import render
from getfluxly_server.web.routing import (
    SESSION_COOKIE,
    Ctx,
    address_of,
    current_user,
    error_page,
    page,
    read_form,
    router,
)

LOGIN_CSRF_COOKIE = "gf_login_csrf"
#: The dashboard's own files, served from the package (nothing is fetched from elsewhere).
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}


def _secure(request: Request) -> bool:
    """Cookies only over HTTPS: when this request came over it, or when the server's public
    address is HTTPS (TLS ended at a proxy in front of it)."""
    return request.url.scheme == "https" or settings(request).public_url.startswith("https://")


def _next(value: str | None) -> str:
    """Where to go after signing in: a path of this server, else the home page."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/"


def _login_page(
    request: Request, *, status: int = 200, error: str = "", email: str = "", next_: str = "/"
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render.standalone(
        request, "login.html", status=status, error=error, email=email, next=next_,
        login_csrf=token,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
        path="/login",
    )  # fmt: skip
    return response


@router.get("/login", include_in_schema=False)
async def login_form(request: Request) -> Response:
    if await current_user(request) is not None:
        return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
    return _login_page(request, next_=_next(request.query_params.get("next")))


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    try:
        form = await read_form(request)
    except DomainError as exc:
        return error_page(request, exc, None)
    email, password = form.get("email", "").strip(), form.get("password", "")
    next_ = _next(form.get("next"))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), form.get("csrf_token", "").encode()):
        return _login_page(
            request, status=403, email=email, next_=next_,
            error="This sign-in form has expired or did not come from this site: try again",
        )  # fmt: skip
    db, address = database(request), address_of(request)

    def attempt() -> users.SignedIn | DomainError:
        with db.transaction() as session:  # commits the failure counts of a refusal too
            return users.sign_in(session, email, password, address)

    outcome = await run_in_threadpool(attempt)
    if isinstance(outcome, DomainError):
        status = 429 if outcome.code == "sign_in_throttled" else 401
        response = _login_page(
            request, status=status, error=outcome.detail, email=email, next_=next_
        )
        response.headers.update(outcome.headers)
        return response
    response = RedirectResponse(next_, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, outcome.token, httponly=True, samesite="lax", secure=_secure(request),
        path="/",
    )  # fmt: skip
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@page("/logout", method="POST")
def logout(ctx: Ctx) -> Response:
    with ctx.db.transaction() as session:
        users.sign_out(session, ctx.request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@page("/")
def home(ctx: Ctx) -> Response:
    """The chosen project's overview (``?project=``: the picker without script), else the
    first project's (or the projects page when there is none yet)."""
    chosen = ctx.query.get("project", "")
    with ctx.db.read() as session:
        projects = tenancy.projects(session, ctx.user.principal)
    if chosen:
        return RedirectResponse(f"/projects/{quote(chosen, safe='')}", status_code=303)
    if projects:
        return RedirectResponse(f"/projects/{projects[0].id}", status_code=303)
    return RedirectResponse("/settings/projects", status_code=303)


@router.get("/static/dashboard/{name}", include_in_schema=False)
def static_file(name: str) -> Response:
    content_type = STATIC.get(name)
    if content_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = (resources.files("getfluxly_server.web") / "static" / name).read_bytes()
    return Response(
        body,
        media_type=content_type,
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


__all__ = ["LOGIN_CSRF_COOKIE", "home", "login", "login_form", "logout", "static_file"]
