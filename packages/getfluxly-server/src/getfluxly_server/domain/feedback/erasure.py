"""An erased person's feedback: scrubbed with their profile (``domain.identity.erase`` calls
:func:`scrub` in its transaction)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy.orm import Session

from getfluxly_server.storage import message_events, webhooks


def scrub(
    session: Session, project_id: str, profile_ids: Collection[str], addresses: Iterable[str]
) -> int:
    """Their ``message_events`` rows lose the address, the reporter's words and links (kept
    for statistics), their per-group choices go, and stored webhook posts naming their
    address are deleted. How many feedback rows were scrubbed."""
    emails = set(addresses)
    scrubbed = message_events.erase(session, project_id, profile_ids, emails)
    webhooks.erase(session, project_id, emails)
    return scrubbed
