"""Segments with members for broadcast tests and benchmarks, written straight to the tables.

A broadcast's audience is the rows of ``segment_members`` when it starts (the segment
evaluator keeps them current in a real install). :func:`add_segment` writes a segment, N
profiles with an ``email`` trait and one member row each, set-based (10,000 in well under a
second), so a test does not depend on rule evaluation to get an audience.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select

from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Profile,
    Segment,
    SegmentMember,
    SegmentTransition,
    new_id,
    now,
)

__all__ = ["Audience", "add_member", "add_segment", "address", "members", "transitions"]

#: Rows per INSERT (SQLite's parameter limit is 32,766).
_CHUNK = 5_000


def address(n: int) -> str:
    """The address of the n-th member."""
    return f"member{n}@example.com"


@dataclass(frozen=True)
class Audience:
    segment_id: str
    #: Profile ids in member order (the n-th has ``traits_for(n)``).
    profile_ids: list[str]


def add_segment(
    db: Database,
    project_id: str,
    members: int,
    *,
    traits_for: Callable[[int], Mapping[str, Any]] | None = None,
    name: str | None = None,
) -> Audience:
    """A segment of the project with ``members`` new profiles in it; the n-th profile's
    traits are ``traits_for(n)`` (default ``{"email": address(n), "n": n}``)."""
    traits = traits_for or (lambda n: {"email": address(n), "n": n})
    moment = now()
    segment_id = new_id("seg")
    ids = [new_id("prf") for _ in range(members)]
    with db.transaction() as session:
        session.execute(
            insert(Segment).values(
                id=segment_id, project_id=project_id, name=name or segment_id,
                rule={"trait": "email", "op": "exists"}, version=1, created_at=moment,
                updated_at=moment,
            )
        )  # fmt: skip
        for start in range(0, members, _CHUNK):
            chunk = range(start, min(members, start + _CHUNK))
            session.execute(
                insert(Profile),
                [
                    {"id": ids[n], "project_id": project_id, "traits": dict(traits(n)),
                     "created_at": moment, "updated_at": moment}
                    for n in chunk
                ],
            )  # fmt: skip
            session.execute(
                insert(SegmentMember),
                [{"segment_id": segment_id, "profile_id": ids[n], "entered_at": moment}
                 for n in chunk],
            )  # fmt: skip
    return Audience(segment_id, ids)


def add_member(db: Database, project_id: str, segment_id: str, n: int) -> str:
    """One more profile (the n-th: ``{"email": address(n), "n": n}``) in the segment."""
    profile_id = new_id("prf")
    moment = now()
    with db.transaction() as session:
        session.execute(
            insert(Profile).values(
                id=profile_id, project_id=project_id, traits={"email": address(n), "n": n},
                created_at=moment, updated_at=moment,
            )
        )  # fmt: skip
        session.execute(
            insert(SegmentMember).values(
                segment_id=segment_id, profile_id=profile_id, entered_at=moment
            )
        )
    return profile_id


def members(db: Database, segment_id: str) -> set[str]:
    """The segment's member profile ids, read from ``segment_members``."""
    with db.read() as session:
        query = select(SegmentMember.profile_id).where(SegmentMember.segment_id == segment_id)
        return set(session.scalars(query))


def transitions(db: Database, segment_id: str) -> list[tuple[str, str]]:
    """The segment's recorded ``(profile_id, kind)`` transitions, oldest first."""
    with db.read() as session:
        rows = session.execute(
            select(SegmentTransition.profile_id, SegmentTransition.kind)
            .where(SegmentTransition.segment_id == segment_id)
            .order_by(SegmentTransition.id)
        )
        return [(p, k) for p, k in rows]
