"""The automations and broadcasts a segment rule names must be its project's.

``{"email": "clicked", "broadcast_id": "brd_..."}`` reads the mail of one broadcast (or
automation): an id that is no broadcast of the segment's project is a fault of the rule, a
400 ``validation_error`` whose ``field`` is the id's JSON path (``rule.any[1].broadcast_id``),
like any other (engine spec section 3). Another project's id and an id that does not exist
get the same words, so a rule cannot tell whether another tenant has it.

Checked when a rule is saved (create, update) and previewed; a rule already parsed by
:func:`.rules.parse` is walked (its shape is known to be right).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.storage import segment_references as store

#: The fields of an ``email`` rule that name another resource, and what it is called.
_NAMED = {"automation_id": "automation", "broadcast_id": "broadcast"}


def check(session: Session, project_id: str, rule: Any, path: str = "rule") -> None:
    """Refuse the first id the (parsed) ``rule`` names that is not of ``project_id``."""
    named = list(_ids(rule, path))
    if not named:
        return
    wanted = {field: {v for f, _, v in named if f == field} for field in _NAMED}
    known = store.automations_of(session, project_id, wanted["automation_id"]) | (
        store.broadcasts_of(session, project_id, wanted["broadcast_id"])
    )
    for field, where, value in named:
        if value not in known:
            kind = _NAMED[field]
            raise ValidationFailed(
                f"{where}: there is no {kind} {value} in this project (use the id of one "
                f"of this project's {kind}s)",
                field=where,
            )


def _ids(node: Any, path: str) -> Iterator[tuple[str, str, str]]:
    """``(field, JSON path, id)`` of each id the rule names, in document order."""
    if not isinstance(node, dict):
        return
    for kind in ("all", "any"):
        if isinstance(node.get(kind), list):
            for i, child in enumerate(node[kind]):
                yield from _ids(child, f"{path}.{kind}[{i}]")
    if "not" in node:
        yield from _ids(node["not"], f"{path}.not")
    if "email" in node:
        for field in _NAMED:
            value = node.get(field)
            if isinstance(value, str):
                yield field, f"{path}.{field}", value
