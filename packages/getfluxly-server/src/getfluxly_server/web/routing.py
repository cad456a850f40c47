"""How every dashboard page is served: who is signed in, what their role allows, CSRF on
every form, and refusals as pages (never JSON, never a traceback).

A page is a plain function ``handler(ctx) -> Response`` registered with :func:`page`, run
in a worker thread (it calls the domain services, which block on the database). Before it
runs, in this order:

1. the session cookie is looked up (``domain.users.session_user``); none, or ended: a GET
   is sent to ``/login?next=...``, anything else is refused (401 page);
2. a POST must carry the session's CSRF token as the form field ``csrf_token`` (and, when
   the browser sends ``Origin``, come from this server's own origin); otherwise 403
   ``csrf_failed`` and nothing runs;
3. the user's role must allow the page's ``need`` (``domain.users.allows``): 403
   ``forbidden`` otherwise, for reads and writes alike.

A ``DomainError`` a handler raises becomes an error page with the status the API gives the
same code (``api.errors.STATUS``); ``not_found`` is what another workspace's ids get, exactly
as ids that do not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from getfluxly_server.api.client_address import client_address
from getfluxly_server.api.deps import database, settings
from getfluxly_server.api.errors import STATUS
from getfluxly_server.api.strict_input import has_bad_text
from getfluxly_server.domain import tenancy, users
from getfluxly_server.domain.errors import DomainError, NotFound
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database
from getfluxly_server.web import render

log = logging.getLogger("getfluxly.web")

#: The session cookie (HttpOnly, SameSite=Lax; Secure when served over HTTPS).
SESSION_COOKIE = "gf_session"
#: Pages the dashboard serves; the API's routes are mounted beside them.
router = APIRouter(include_in_schema=False)

Handler = Callable[["Ctx"], Response]


class _InProject(Protocol):
    @property
    def project_id(self) -> str: ...


Row = TypeVar("Row", bound=_InProject)


@dataclass(frozen=True)
class PageInfo:
    """A registered page: its path template, method and what it needs of the user's role."""

    path: str
    method: str
    need: users.Need


#: Every page registered with :func:`page`, in order (the security tests go through them all).
PAGES: list[PageInfo] = []


class Refused(DomainError):  # noqa: N818 - reads as what happened
    """The user may not do this (their role), or the form was not this session's."""


@dataclass
class Ctx:
    """What a page handler gets: the request, who is signed in, the form (POST), the path
    parameters, and the composition root's database and settings."""

    request: Request
    user: users.SignedInUser
    db: Database
    settings: Settings
    params: Mapping[str, str]
    form: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def render(
        self, template_name: str, /, *, http_status: int = 200, **values: Any
    ) -> HTMLResponse:
        return render.page(self, template_name, http_status=http_status, **values)

    def redirect(self, url: str, *, flash: str | None = None) -> RedirectResponse:
        """See Other to ``url`` (after a POST), with a one-line notice shown there."""
        if flash:
            url += ("&" if "?" in url else "?") + "flash=" + quote(flash[:300])
        return RedirectResponse(url, status_code=303)

    def allows(self, need: users.Need) -> bool:
        return self.user.allows(need)

    def text(self, name: str, default: str = "") -> str:
        """A form field as given (stripped of surrounding blanks)."""
        return self.form.get(name, default).strip()

    def project(self) -> str:
        """The path's ``project_id``, checked to be one this user sees: another workspace's
        is ``not_found``, before any field of the form is looked at."""
        project_id = self.params["project_id"]
        with self.db.read() as session:
            tenancy.project_of(session, self.user.principal, project_id)
        return project_id

    def in_project(self, row: Row, what: str) -> Row:
        """``row`` when it belongs to the path's project; ``not_found`` (as ``what``)
        otherwise, so a URL pairing one project with another's id shows nothing."""
        if row.project_id != self.params["project_id"]:
            raise NotFound(what)
        return row


def _status(code: str) -> int:
    if code in ("csrf_failed", "forbidden"):
        return 403
    if code == "sign_in_throttled":
        return 429
    return STATUS.get(code, 422)


def error_page(request: Request, exc: DomainError, user: users.SignedInUser | None) -> Response:
    status = _status(exc.code)
    response = render.standalone(
        request, "error.html", status=status, user=user, code=exc.code, detail=exc.detail
    )
    response.headers.update(exc.headers)
    return response


def _same_origin(request: Request) -> bool:
    """A POST's ``Origin`` (when the browser sends one) is this server's own."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each), checked as every input is:
    no NUL or lone surrogate (what PostgreSQL cannot store)."""
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise DomainError("validation_error", "The form is not valid UTF-8") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if has_bad_text(name) or has_bad_text(value):
            raise DomainError("validation_error", f"The field {name!r} holds a NUL character")
        form.setdefault(name, value)
    return form


def _load_user(db: Database, token: str) -> users.SignedInUser | None:
    with db.transaction() as session:
        return users.session_user(session, token)


async def current_user(request: Request) -> users.SignedInUser | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    return await run_in_threadpool(_load_user, database(request), token)


def address_of(request: Request) -> str:
    return client_address(request.scope, settings(request).trusted_proxies)


def page(
    path: str, *, method: str = "GET", need: users.Need = "view"
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the page at ``path`` (see the module docstring)."""

    def register(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            user = await current_user(request)
            if user is None:
                if method == "GET":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
                return error_page(
                    request,
                    DomainError("unauthenticated", "Your session has ended: sign in again"),
                    None,
                )
            try:
                form: dict[str, str] = {}
                if method == "POST":
                    form = await read_form(request)
                    if not _same_origin(request) or not users.csrf_matches(
                        user, form.get("csrf_token")
                    ):
                        raise Refused(
                            "csrf_failed",
                            "This form was not sent from this session's page (or the page is "
                            "old): reload the page and try again",
                        )
                if not user.allows(need):
                    raise Refused(
                        "forbidden",
                        f"Your role ({user.role}) cannot do this; ask an admin of the workspace",
                    )
                ctx = Ctx(
                    request, user, database(request), settings(request),
                    dict(request.path_params), form, dict(request.query_params),
                )  # fmt: skip
                return await run_in_threadpool(handler, ctx)
            except DomainError as exc:
                return error_page(request, exc, user)

        PAGES.append(PageInfo(path, method, need))
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=f"{handler.__module__}.{handler.__name__}",
            response_class=HTMLResponse,
        )
        return handler

    return register


__all__ = [
    "PAGES",
    "SESSION_COOKIE",
    "Ctx",
    "PageInfo",
    "Refused",
    "current_user",
    "error_page",
    "page",
    "router",
]
