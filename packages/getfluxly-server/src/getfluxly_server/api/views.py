"""How objects look in responses. Secrets are never part of a view."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from getfluxly_server.domain.tenancy import IssuedKey
from getfluxly_server.storage.models import ApiKey, EmailProvider, Project


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def project(row: Project) -> dict[str, Any]:
    return {
        "id": row.id,
        "workspace_id": row.workspace_id,
        "name": row.name,
        "created_at": _time(row.created_at),
    }


def key(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "hint": row.hint + "…",
        "project_id": row.project_id,
        "created_at": _time(row.created_at),
        "revoked_at": _time(row.revoked_at),
    }


def issued(key_: IssuedKey) -> dict[str, Any]:
    """A new key with its plaintext: the only response that ever contains it."""
    return {**key(key_.record), "key": key_.plaintext}


def provider(row: EmailProvider, warnings: list[str] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "project_id": row.project_id,
        "provider": row.provider,
        "display_name": row.display_name,
        "from_email": row.from_email,
        "from_name": row.from_name,
        "reply_to": row.reply_to,
        **row.config,
        "secret_set": True,
        "verified_at": _time(row.verified_at),
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
    }
    if warnings is not None:
        view["warnings"] = warnings
    return view
