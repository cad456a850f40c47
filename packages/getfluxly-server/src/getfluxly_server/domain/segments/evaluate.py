"""A typed rule (:mod:`.model`) turned into one SQL query (``storage.segment_sql``)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Select
from sqlalchemy.orm import Session

from getfluxly_server.domain.segments.model import (
    All,
    AnyOf,
    Condition,
    Email,
    Not,
    Op,
    Performed,
    Rule,
    Subscribed,
    Trait,
)
from getfluxly_server.storage import segment_sql
from getfluxly_server.storage.segment_sql import Scope


def member_ids(
    session: Session,
    project_id: str,
    rule: Rule,
    now: datetime,
    *,
    among: Collection[str] | None = None,
) -> Select[str]:
    scope = Scope.of(session, project_id, among)
    return scope.members(_condition(scope, rule, now))


def matches(session: Session, project_id: str, profile_id: str, rule: Rule, now: datetime) -> bool:
    return segment_sql.exists_in(
        session, member_ids(session, project_id, rule, now, among=[profile_id])
    )


def _condition(scope: Scope, rule: Rule, now: datetime) -> segment_sql.Condition:
    match rule:
        case All(rules):
            return segment_sql.all_of([_condition(scope, r, now) for r in rules])
        case AnyOf(rules):
            return segment_sql.any_of([_condition(scope, r, now) for r in rules])
        case Not(inner):
            return segment_sql.negate(_condition(scope, inner, now))
        case Trait(condition):
            return scope.trait(*_json(condition, now))
        case Performed(event, where, count_op, count, within):
            filters = [_json(c, now) for c in where]
            since = now - within if within is not None else None
            return scope.performed(event, filters, count_op.value, count, since)
        case Email(activity, within, automation_id, broadcast_id):
            since = now - within if within is not None else None
            return scope.email(activity.value, since, automation_id, broadcast_id)
        case Subscribed(subscribed, group):
            return scope.subscribed(subscribed, group)
    raise TypeError(f"not a rule: {rule!r}")  # pragma: no cover - the union is closed


def _json(condition: Condition, now: datetime) -> tuple[str, str, object]:
    """A condition in the terms of ``segment_sql.json_condition`` (time ops as bounds)."""
    value = condition.value
    if isinstance(value, timedelta):  # within_last, before_last
        if condition.op is Op.WITHIN_LAST:
            return condition.key, "within", (now - value, now)
        return condition.key, "before", now - value
    return condition.key, condition.op.value, value
