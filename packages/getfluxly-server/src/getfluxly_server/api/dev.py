"""Dev mode: what the built-in SMTP catcher received (workspace key; 404 outside dev mode)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import database, settings
from getfluxly_server.domain.errors import NotFound
from getfluxly_server.settings import Settings
from getfluxly_server.storage import dev_messages
from getfluxly_server.storage.db import Database

router = APIRouter(prefix="/v1/dev", tags=["dev mode"])


@router.get("/messages")
def list_messages(
    who: WorkspaceKey,
    db: Annotated[Database, Depends(database)],
    config: Annotated[Settings, Depends(settings)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Newest first, each with its envelope and raw source."""
    if not config.dev:
        raise NotFound("endpoint (dev mode only)")
    with db.read() as session:
        rows = dev_messages.newest(session, limit)
        return {
            "messages": [
                {
                    "id": row.id,
                    "received_at": row.received_at.isoformat().replace("+00:00", "Z"),
                    "mail_from": row.mail_from,
                    "rcpt_tos": row.rcpt_tos,
                    "subject": row.subject,
                    "raw": row.raw.decode("utf-8", errors="replace"),
                }
                for row in rows
            ]
        }
