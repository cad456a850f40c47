"""Cursor paging: a list answers one page and ``next_cursor``, the opaque token of the page
after it (``None`` on the last page); the client passes it back as ``?cursor=``.

A cursor is the sort key of the last item of a page (keyset paging: no offset to skip, so a
page costs the same at the end of a long list, and items added meanwhile neither repeat nor
vanish), as URL-safe base64 of a JSON list of strings. It is not signed: it holds nothing
but values of an item the caller was already shown, and every query it feeds is still
scoped to the caller's project. A cursor that does not decode is ``validation_error`` on
field ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from getfluxly_server.domain.errors import ValidationFailed

_Row = TypeVar("_Row")


class Timed(Protocol):
    """A row listed newest first: by its creation time, then its id."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> str: ...


#: Items per page unless the caller asks (``?limit=``), and the most it may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode(*parts: str) -> str:
    """The cursor of an item whose sort key is ``parts``."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, size: int) -> list[str]:
    """The ``size`` parts of a cursor made by :func:`encode`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != size
        or not all(isinstance(p, str) for p in parts)
    ):
        raise ValidationFailed(
            "cursor is not one this server gave (pass next_cursor from the previous page "
            "as it was)",
            field="cursor",
        )
    return parts


def encode_time(at: datetime, tie: str) -> str:
    """The cursor of an item sorted by a time, then by ``tie`` (its id)."""
    return encode(at.isoformat(), tie)


def decode_time(cursor: str) -> tuple[datetime, str]:
    """``(time, tie)`` of a cursor made by :func:`encode_time`."""
    at, tie = decode(cursor, 2)
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed("cursor is not one this server gave", field="cursor")
    return moment, tie


def cut(rows: Sequence[_Row], limit: int) -> tuple[list[_Row], _Row | None]:
    """A page of ``rows`` fetched with ``limit + 1`` (the one extra tells whether more
    follow): the first ``limit`` of them, and the last of those when a next page exists (the
    item its cursor names), else ``None``."""
    page = list(rows[:limit])
    return page, (page[-1] if len(rows) > limit else None)


_TimedRow = TypeVar("_TimedRow", bound=Timed)


def newest_first(
    fetch: Callable[[tuple[datetime, str] | None, int], Sequence[_TimedRow]],
    limit: int,
    cursor: str | None,
) -> tuple[list[_TimedRow], str | None]:
    """A page of a newest-first list and the cursor of the next (``None``: the last page).
    ``fetch(before, n)`` reads up to ``n`` rows after ``before``, the ``(created_at, id)``
    of the previous page's last (``None``: from the newest); see
    :func:`getfluxly_server.storage.paging.newest_first`."""
    before = decode_time(cursor) if cursor else None
    rows, last = cut(fetch(before, limit + 1), limit)
    return rows, next_time_cursor(last)


def next_time_cursor(last: Timed | None) -> str | None:
    """The cursor after ``last`` of a newest-first list (``None``: there is no next page)."""
    return encode_time(last.created_at, last.id) if last is not None else None
