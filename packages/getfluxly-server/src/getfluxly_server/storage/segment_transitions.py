"""Reading a segment's recorded entries and exits (``segment_transitions``), newest first:
what the dashboard shows of a segment's recent movement. Rows are written only by
:mod:`.segments`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import SegmentTransition


def recent(session: Session, segment_id: str, limit: int) -> Sequence[SegmentTransition]:
    """Up to ``limit`` of the segment's latest transitions, newest (highest id) first."""
    query = (
        select(SegmentTransition)
        .where(SegmentTransition.segment_id == segment_id)
        .order_by(SegmentTransition.id.desc())
        .limit(limit)
    )
    return session.scalars(query).all()
