"""Dev mode's caught mail, as a workspace may see it: its own only, each caught message
linked to the ledger message it is (by its ``X-GetFluxly-Message-Id`` header)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.orm import Session

from getfluxly_server.delivery.base import MESSAGE_ID_HEADER
from getfluxly_server.domain.errors import NotFound
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import dev_messages as store
from getfluxly_server.storage.models import DevMessage

#: A ledger id as ``storage.models.new_id("msg")`` makes them.
_LEDGER_ID = re.compile(r"msg_[0-9a-z]{20}")

__all__ = ["MESSAGE_ID_HEADER", "caught", "ledger_id"]


def ledger_id(header: object) -> str | None:
    """The ledger message id a caught message's :data:`MESSAGE_ID_HEADER` value names, or
    None (no header, or not a ledger id: anyone can send the catcher any header)."""
    if not isinstance(header, str):
        return None
    value = header.strip()
    return value if _LEDGER_ID.fullmatch(value) else None


def caught(
    session: Session,
    principal: Principal,
    limit: int,
    *,
    dev: bool,
    message_id: str | None = None,
) -> Sequence[DevMessage]:
    """The caller's workspace's caught messages (only those of ledger message
    ``message_id``, if given), newest first; not_found outside dev mode."""
    if not dev:
        raise NotFound("endpoint (dev mode only)")
    return store.newest(session, principal.workspace_id, limit, message_id=message_id)
