"""Unsubscribing (public: the signed token in the path is the credential).

- ``POST /unsubscribe/{token}``: the ``List-Unsubscribe`` URL's one-click (RFC 8058; mailbox
  providers post ``List-Unsubscribe=One-Click``, any body is taken): unsubscribes at once
  (from the message's subscription group if it has one, else from all marketing mail) and
  answers a short page.
- ``GET /unsubscribe/{token}`` and ``GET /preferences/{token}``: the preference page, one
  checkbox per subscription group of the project and "unsubscribe from everything".
- ``POST /preferences/{token}``: the page's form (``application/x-www-form-urlencoded``:
  ``group`` once per group left ticked, ``unsubscribe_all=1``); answers the page again.

A token that was changed is 404 with a page saying so; nothing is changed. Requests are
counted per client address (api/public_limits.py): past ``GETFLUXLY_PUBLIC_RATE_LIMIT_*``,
429 ``rate_limited``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from getfluxly_server.api.deps import DB
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.api.public_limits import PublicVisitor
from getfluxly_server.api.tracking import LIMITED, NO_CACHE, ServerLinks, hit
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.tracking import Links
from getfluxly_server.domain.tracking import preferences as domain
from getfluxly_server.storage.db import Database

log = logging.getLogger("getfluxly.tracking")
router = APIRouter(tags=["unsubscribe"])

#: The pages answer in HTML; a path the server refuses before them (api/strict_input.py)
#: and a body over the limit are the usual JSON errors.
_PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The page", "content": {"text/html": {}}},
    400: {
        "description": "A form this page did not send",
        "content": {"text/html": {}},
        "model": ErrorBody,
    },
    404: {
        "description": "The link was changed, or its message is gone",
        "content": {"text/html": {}},
        "model": ErrorBody,
    },
    **LIMITED,
}


#: The pages run no script, load nothing and may not be framed (an unsubscribe form under
#: another site's overlay); their form posts only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


def _html(title: str, body: Markup | str, status: int = 200) -> HTMLResponse:
    page = Markup(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        "<meta name=robots content=noindex><title>{title}</title><style>"
        "body{{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;"
        "padding:0 1rem;color:#222}}label{{display:block;margin:.6rem 0}}"
        "small{{display:block;color:#666;margin-left:1.6rem}}button{{font:inherit;"
        "padding:.4rem 1rem;margin-top:1rem}}</style></head><body><h1>{title}</h1>{body}"
        "</body></html>"
    ).format(title=title, body=body)
    return HTMLResponse(str(page), status_code=status, headers={**NO_CACHE, **PAGE_HEADERS})


def _not_found(exc: DomainError) -> HTMLResponse:
    return _html("Link not valid", Markup("<p>{}</p>").format(exc.detail), 404)


def _page(found: domain.PreferencePage, links: Links, saved: bool = False) -> HTMLResponse:
    action = links.preferences_url(found.message_id)
    rows = Markup("").join(
        Markup(
            '<label><input type=checkbox name=group value="{name}"{checked}> {label}'
            "{description}</label>"
        ).format(
            name=g.name,
            label=g.label,
            checked=Markup(" checked") if g.subscribed else "",
            description=Markup("<small>{}</small>").format(g.description) if g.description else "",
        )
        for g in found.groups
    )
    notes: list[Markup] = []
    if saved:
        notes.append(Markup("<p><strong>Your choices are saved.</strong></p>"))
    if found.blocked:
        notes.append(Markup("<p>Mail to this address is stopped (it bounced or was reported).</p>"))
    body = Markup(
        "{notes}<p>Email preferences of <strong>{email}</strong>{project}.</p>"
        '<form method=post action="{action}">{rows}'
        "<label><input type=checkbox name=unsubscribe_all value=1{all}> Unsubscribe from all "
        "marketing email</label><button type=submit>Save</button></form>"
    ).format(
        notes=Markup("").join(notes),
        email=found.email,
        project=Markup(" for {}").format(found.project_name) if found.project_name else "",
        action=action,
        rows=rows,
        all=Markup(" checked") if found.unsubscribed_all else "",
    )
    return _html("Email preferences", body)


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=_PAGE,
    dependencies=[PublicVisitor],
)
def one_click(token: str, request: Request, db: DB, links: ServerLinks) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058): at once, from the message's group or from all
    marketing mail."""
    try:
        message_id = links.unsubscribing(token)
        with db.transaction() as session:
            domain.one_click(session, message_id, hit(request))
            found = domain.page(session, message_id)
    except DomainError as exc:
        return _not_found(exc)
    return _html(
        "Unsubscribed",
        Markup(
            '<p>{} will get no more of this mail. <a href="{}">Email preferences</a></p>'
        ).format(found.email, links.preferences_url(found.message_id)),
    )


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=_PAGE,
    dependencies=[PublicVisitor],
)
def unsubscribe_page(token: str, db: DB, links: ServerLinks) -> HTMLResponse:
    """The preference page, from the ``List-Unsubscribe`` link."""
    return _show(db, links, lambda: links.unsubscribing(token))


@router.get(
    "/preferences/{token}",
    response_class=HTMLResponse,
    responses=_PAGE,
    dependencies=[PublicVisitor],
)
def preferences_page(token: str, db: DB, links: ServerLinks) -> HTMLResponse:
    """The preference page."""
    return _show(db, links, lambda: links.preferring(token))


@router.post(
    "/preferences/{token}",
    response_class=HTMLResponse,
    responses=_PAGE,
    dependencies=[PublicVisitor],
)
async def save_preferences(
    token: str, request: Request, db: DB, links: ServerLinks
) -> HTMLResponse:
    """The page's form: the groups left ticked, and ``unsubscribe_all``."""
    try:
        message_id = links.preferring(token)
    except DomainError as exc:
        return _not_found(exc)
    try:
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=200)
    except ValueError:  # more fields than any page of ours has
        return _html("Not saved", Markup("<p>The form was not one this page sent.</p>"), 400)
    ticked = set(_strings(form.get("group", ())))
    leave_all = form.get("unsubscribe_all", [""])[0] in ("1", "on", "true")
    who = hit(request)

    def save() -> HTMLResponse:
        try:
            with db.transaction() as session:
                found = domain.save(session, message_id, ticked, unsubscribe_all=leave_all,
                                    hit=who)  # fmt: skip
        except DomainError as exc:
            return _not_found(exc)
        return _page(found, links, saved=True)

    return await run_in_threadpool(save)


def _strings(values: Iterable[str]) -> list[str]:
    return [v for v in values if len(v) <= 64]


def _show(db: Database, links: Links, message_of: Any) -> HTMLResponse:
    try:
        message_id = message_of()
        with db.read() as session:
            found = domain.page(session, message_id)
    except DomainError as exc:
        return _not_found(exc)
    return _page(found, links)
