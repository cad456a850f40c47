"""A segment's recent movement: the entries and exits the evaluator recorded, newest first,
and the addresses of the profiles a segment's page lists (the dashboard's segment page)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy.orm import Session

from getfluxly_server.domain.segments import store as segment_store
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import profile_emails, segment_transitions
from getfluxly_server.storage.models import SegmentTransition

#: The most transitions one read returns.
MAX_RECENT = 200


def recent(
    session: Session, principal: Principal, segment_id: str, limit: int = 20
) -> Sequence[SegmentTransition]:
    """The segment's latest ``limit`` entries (``kind`` ``entered``) and exits (``left``),
    newest first; ``not_found`` for a segment ``principal`` may not see."""
    segment = segment_store.find(session, principal, segment_id)
    return segment_transitions.recent(session, segment.id, max(1, min(limit, MAX_RECENT)))


def emails(
    session: Session, principal: Principal, segment_id: str, profile_ids: Collection[str]
) -> dict[str, str]:
    """The ``email`` trait of those of ``profile_ids`` that are profiles of the segment's
    project and have one; ``not_found`` for a segment ``principal`` may not see."""
    segment = segment_store.find(session, principal, segment_id)
    return profile_emails.emails_of(session, segment.project_id, profile_ids)
