"""Dev mode's caught mail, as a workspace may see it: its own only."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import NotFound
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import dev_messages as store
from getfluxly_server.storage.models import DevMessage


def caught(
    session: Session, principal: Principal, limit: int, *, dev: bool
) -> Sequence[DevMessage]:
    """The caller's workspace's caught messages, newest first; not_found outside dev mode."""
    if not dev:
        raise NotFound("endpoint (dev mode only)")
    return store.newest(session, principal.workspace_id, limit)
