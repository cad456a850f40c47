"""Dev mode: the built-in catcher's inbox (``domain.dev_messages``: the workspace's own
caught mail only), each message rendered: its headers, its HTML in a sandboxed frame (no
scripts, no same-origin access, no forms), its text. Not found outside dev mode."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from fastapi import Response

from getfluxly_server.domain import dev_messages
from getfluxly_server.domain.errors import NotFound
from getfluxly_server.web.routing import Ctx, page

#: How many of the newest caught messages the inbox lists.
LISTED = 200
SHOWN_HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Unsubscribe")


def _part(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def rendered(raw: bytes) -> dict[str, Any]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return {
        "headers": [(h, str(message[h])) for h in SHOWN_HEADERS if message[h] is not None],
        "html": _part(message, "html"),
        "text": _part(message, "plain"),
    }


@page("/dev/inbox")
def inbox(ctx: Ctx) -> Response:
    wanted = ctx.query.get("id", "")
    with ctx.db.read() as session:
        if not ctx.settings.dev:
            raise NotFound("page (dev mode only)")
        rows = dev_messages.caught(session, ctx.user.principal, LISTED, dev=True)
        listed = [
            (r.id, r.received_at, r.mail_from, r.rcpt_tos, r.subject, r.getfluxly_message_id)
            for r in rows
        ]
        chosen = next((r for r in rows if str(r.id) == wanted), rows[0] if rows else None)
        if wanted and (chosen is None or str(chosen.id) != wanted):
            raise NotFound("caught message")
        shown = None
        if chosen is not None:
            shown = {"id": chosen.id, "subject": chosen.subject, **rendered(chosen.raw)}
    return ctx.render("inbox.html", listed=listed, shown=shown)
