"""Keyset paging of newest-first lists: the query side of :mod:`getfluxly_server.domain.paging`."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVarTuple

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

_Columns = TypeVarTuple("_Columns")


def newest_first(
    query: Select[*_Columns],
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[str],
    *,
    limit: int,
    before: tuple[datetime, str] | None,
) -> Select[*_Columns]:
    """``query`` ordered newest first (``created_at``, then id), ``limit`` rows, starting
    after ``before``: the ``(created_at, id)`` of the previous page's last row. The id breaks
    ties, so rows made in the same instant are neither repeated nor skipped."""
    if before is not None:
        at, tie = before
        query = query.where(or_(created_at < at, and_(created_at == at, row_id < tie)))
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit)
