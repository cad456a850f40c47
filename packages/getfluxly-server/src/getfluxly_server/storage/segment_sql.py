"""A segment rule as SQL: the conditions ``domain.segments`` composes into one query.

Every condition here is true or false for every profile, never NULL (a missing trait makes a
comparison false, not unknown), so ``NOT`` of any of them is its exact complement. JSON is
read the way each database offers: PostgreSQL's ``->``/``->>``/``json_typeof``, SQLite's
``json_extract``/``json_type``; comparisons are typed as JSON is (a number never equals the
text of its digits) on both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Numeric,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute, Session

from getfluxly_server.storage.models import (
    Event,
    Message,
    MessageEvent,
    Profile,
    Subscription,
    Suppression,
    SuppressionReason,
    UTCDateTime,
)

Condition = ColumnElement[bool]

#: Up to this many profiles (``among``), mail activity is looked up per profile through the
#: indexes; more (a full computation walks a project a page of 1,000 at a time) read the
#: activity once: SQLite took 47-99 s of CPU for the ten pages of a 10,000-profile project
#: against one ``opened``/``clicked`` rule through the per-profile lookups, 0.4-0.7 s so.
FEW = 64

#: Statuses a message has only once the relay accepted it (``sent`` and what feedback
#: moves a sent message to).
SENT_OR_LATER = ("sent", "delivered", "bounced", "complained", "opened", "clicked", "unsubscribed")
#: An ISO 8601 date or date-time (PostgreSQL side; SQLite's julianday judges the rest).
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"
_SQLITE_DATE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


def _known(condition: ColumnElement[Any]) -> Condition:
    """A condition that may be NULL (a JSON value that is not there) as false instead."""
    return func.coalesce(condition, false())


class _Json:
    """One key of a JSON column (a profile's traits, an event's properties)."""

    def __init__(self, column: InstrumentedAttribute[Any], key: str, postgres: bool) -> None:
        self.postgres = postgres
        if postgres:
            self.node = column[key]
            self.kind = func.json_typeof(self.node)
            self.raw: ColumnElement[Any] = column[key].as_string()
        else:
            # Names never hold quotes or backslashes (rules.parse refuses them).
            self.path = '$."' + key + '"'
            self.column = column
            self.kind = func.json_type(column, self.path)
            self.raw = func.json_extract(column, self.path)

    def is_text(self) -> Condition:
        return self.kind == ("string" if self.postgres else "text")

    def is_number(self) -> Condition:
        return self.kind == "number" if self.postgres else self.kind.in_(("integer", "real"))

    def text(self) -> ColumnElement[Any]:
        value = case((self.is_text(), self.raw))
        # Code point order on both (SQLite's default; PostgreSQL's "C" collation).
        return value.collate("C") if self.postgres else value

    def number(self) -> ColumnElement[Any]:
        return case((self.is_number(), cast(self.raw, Numeric) if self.postgres else self.raw))

    def is_bool(self, value: bool) -> Condition:
        if self.postgres:
            return and_(self.kind == "boolean", self.raw == ("true" if value else "false"))
        return self.kind == ("true" if value else "false")

    def eq(self, value: Any) -> Condition:
        if isinstance(value, bool):
            return _known(self.is_bool(value))
        if isinstance(value, int | float):
            return _known(self.number() == value)
        return _known(self.text() == value)

    def compare(self, op: str, value: Any) -> Condition:
        side = self.number() if isinstance(value, int | float) else self.text()
        compared = {
            "gt": side > value, "gte": side >= value, "lt": side < value, "lte": side <= value,
        }[op]  # fmt: skip
        return _known(compared)

    def contains(self, value: Any) -> Condition:
        element = self._array_has(value)
        if not isinstance(value, str):
            return element
        if self.postgres:
            inside = func.strpos(self.text(), value) > 0
        else:
            inside = func.instr(self.text(), value) > 0
        return or_(_known(inside), element)

    def _array_has(self, value: Any) -> Condition:
        if self.postgres:
            wanted = cast(literal(orjson.dumps([value]).decode()), JSONB)
            return _known(case((self.kind == "array", cast(self.node, JSONB).op("@>")(wanted))))
        each = func.json_each(self.column, self.path).table_valued("value", "type").alias("je")
        if isinstance(value, bool):
            typed = each.c.type == ("true" if value else "false")
        elif isinstance(value, int | float):
            typed = and_(each.c.type.in_(("integer", "real")), each.c.value == value)
        else:
            typed = and_(each.c.type == "text", each.c.value == value)
        return and_(
            _known(self.kind == "array"), select(literal(1)).select_from(each).where(typed).exists()
        )

    def present(self) -> Condition:
        return _known(self.kind != "null")

    def date(self) -> ColumnElement[Any]:
        """The value as a point in time, NULL when it is not an ISO 8601 date (text)."""
        if self.postgres:
            text = case((and_(self.is_text(), self.raw.op("~")(_ISO_DATE)), self.raw))
            return func.gf_timestamptz(text, type_=DateTime(timezone=True))
        text = case((and_(self.is_text(), self.raw.op("GLOB")(_SQLITE_DATE)), self.raw))
        # SQLite rolls 2026-02-30 over into March where PostgreSQL refuses it: a date whose
        # day part does not survive the round trip is no date.
        day = func.julianday(text)
        return case((func.date(day) == func.substr(text, 1, 10), day))

    def moment(self, at: datetime) -> ColumnElement[Any]:
        """``at`` in the form :meth:`date` compares with."""
        bound = literal(at, UTCDateTime())
        return bound if self.postgres else func.julianday(bound)


def json_condition(
    column: InstrumentedAttribute[Any], key: str, op: str, value: Any, postgres: bool
) -> Condition:
    """``key op value`` on a JSON column. ``op``: eq, neq, gt, gte, lt, lte, contains, in
    (value: a sequence), exists, not_exists, within (value: ``(since, until)`` datetimes),
    before (value: a datetime)."""
    node = _Json(column, key, postgres)
    if op == "eq":
        return node.eq(value)
    if op == "neq":
        return not_(node.eq(value))
    if op in ("gt", "gte", "lt", "lte"):
        return node.compare(op, value)
    if op == "contains":
        return node.contains(value)
    if op == "in":
        return or_(*(node.eq(v) for v in value))
    if op == "exists":
        return node.present()
    if op == "not_exists":
        return not_(node.present())
    if op == "within":
        since, until = value
        return _known(and_(node.date() >= node.moment(since), node.date() <= node.moment(until)))
    if op == "before":
        return _known(node.date() < node.moment(value))
    raise ValueError(f"unknown operator {op!r}")


@dataclass(frozen=True)
class Scope:
    """Where a rule is evaluated: a project's profiles (only ``among`` when given)."""

    project_id: str
    postgres: bool
    among: Collection[str] | None = None

    @classmethod
    def of(cls, session: Session, project_id: str, among: Collection[str] | None) -> Scope:
        postgres = session.get_bind().dialect.name == "postgresql"
        return cls(project_id, postgres, None if among is None else sorted(set(among)))

    def trait(self, key: str, op: str, value: Any) -> Condition:
        return json_condition(Profile.traits, key, op, value, self.postgres)

    def performed(
        self,
        event: str,
        where: Sequence[tuple[str, str, Any]],
        count_op: str,
        count: int,
        since: datetime | None,
    ) -> Condition:
        """Performed ``event`` (properties meeting each ``(key, op, value)``) a number of
        times that meets ``count_op count`` (gte | lte | eq), since ``since`` if given."""
        if count_op == "gte" and count == 0:
            return true()
        filters = [
            Event.name == event,
            *(json_condition(Event.properties, k, o, v, self.postgres) for k, o, v in where),
        ]
        if since is not None:
            filters.append(Event.timestamp >= since)
        if self.among is not None:
            # A few profiles: count each one's events through its index (profile_id,
            # timestamp), whatever the planner knows of the table.
            counted = (
                select(func.count()).where(Event.profile_id == Profile.id, *filters)
            ).scalar_subquery()
            if count_op == "gte":
                return counted >= count
            if count_op == "lte":
                return counted <= count
            return counted == count
        query = select(Event.profile_id).where(
            Event.project_id == self.project_id, Event.profile_id.is_not(None), *filters
        )
        if (count_op, count) == ("gte", 1):
            return Profile.id.in_(query)
        if count == 0:  # eq 0, lte 0: never
            return not_(Profile.id.in_(query))
        grouped = query.group_by(Event.profile_id)
        if count_op == "gte":
            return Profile.id.in_(grouped.having(func.count() >= count))
        if count_op == "eq":
            return Profile.id.in_(grouped.having(func.count() == count))
        return not_(Profile.id.in_(grouped.having(func.count() > count)))

    def email(
        self,
        activity: str,
        since: datetime | None,
        automation_id: str | None,
        broadcast_id: str | None,
    ) -> Condition:
        """A message of the profile (of the automation/broadcast if given) was sent (status
        ``sent`` or later; ``since`` on its ``sent_at``), or had a feedback event of type
        ``activity`` (human, not machine; ``since`` on when it occurred)."""
        origin = [
            c
            for c in (
                Message.automation_id == automation_id if automation_id else None,
                Message.broadcast_id == broadcast_id if broadcast_id else None,
            )
            if c is not None
        ]
        if activity == "sent":
            sent = select(Message.profile_id).where(
                Message.project_id == self.project_id,
                Message.profile_id.is_not(None),
                Message.status.in_(SENT_OR_LATER),
                *origin,
            )
            if since is not None:
                sent = sent.where(Message.sent_at >= since)
            if self.among is not None:
                sent = sent.where(Message.profile_id.in_(self.among))
            return Profile.id.in_(sent)
        # The message's profile (moved on merges) where the event joined one.
        who = func.coalesce(Message.profile_id, MessageEvent.profile_id)
        kind = [
            MessageEvent.project_id == self.project_id,
            MessageEvent.type == activity,
            MessageEvent.machine.is_(False),
        ]
        if since is not None:
            kind.append(MessageEvent.occurred_at >= since)
        if self.among is not None and len(self.among) <= FEW:
            # A few profiles: each one's feedback through the indexes, whatever the project's
            # volume of opens and clicks: the events recorded for the profile (whose message
            # is still its), or its messages' events (moved to it by a merge).
            own = (
                select(literal(1))
                .select_from(MessageEvent)
                .outerjoin(Message, Message.id == MessageEvent.message_id)
                .where(MessageEvent.profile_id == Profile.id, who == Profile.id, *kind, *origin)
                .exists()
            )
            moved = (
                select(literal(1))
                .select_from(Message)
                .join(MessageEvent, MessageEvent.message_id == Message.id)
                .where(Message.profile_id == Profile.id, *kind, *origin)
                .exists()
            )
            return or_(own, moved)
        events = (
            select(who)
            .select_from(MessageEvent)
            .outerjoin(Message, Message.id == MessageEvent.message_id)
            .where(*kind, who.is_not(None), *origin)
        )
        return Profile.id.in_(events)

    def subscribed(self, subscribed: bool, group: str | None) -> Condition:
        """The profile's ``email`` trait (lower-cased, as suppressions and subscriptions
        keep addresses) is (``subscribed``) or is not unsubscribed, from everything or from
        ``group``. A profile without an address matches neither."""
        address = func.lower(_Json(Profile.traits, "email", self.postgres).text())
        has_address = _known(func.length(address) > 0)
        out: Condition = (
            select(literal(1))
            .where(
                Suppression.project_id == self.project_id,
                Suppression.email == address,
                Suppression.reason == SuppressionReason.UNSUBSCRIBED.value,
            )
            .exists()
        )
        if group is not None:
            left_group = (
                select(literal(1))
                .where(
                    Subscription.project_id == self.project_id,
                    Subscription.email == address,
                    Subscription.group_name == group,
                    Subscription.subscribed.is_(False),
                )
                .exists()
            )
            out = or_(out, left_group)
        return and_(has_address, out if not subscribed else not_(out))

    def addressed(self, emails: Collection[str]) -> Condition:
        """The profile's ``email`` trait, lower-cased, is one of ``emails`` (lower-case)."""
        address = func.lower(_Json(Profile.traits, "email", self.postgres).text())
        return _known(address.in_(sorted(emails)))

    def members(self, condition: Condition) -> Select[str]:
        """The ids of the project's live profiles (in ``among``) meeting ``condition``."""
        if self.among is None or self.postgres:
            project = Profile.project_id == self.project_id
        else:
            # The project as an expression no index serves: SQLite's planner would walk the
            # project's index over every profile rather than look up the few given by id.
            project = func.coalesce(Profile.project_id, "") == self.project_id
        query = select(Profile.id).where(
            project, Profile.merged_into.is_(None), Profile.erased_at.is_(None), condition
        )
        if self.among is not None:
            query = query.where(Profile.id.in_(self.among))
        return query


def all_of(conditions: Sequence[Condition]) -> Condition:
    return and_(*conditions)


def any_of(conditions: Sequence[Condition]) -> Condition:
    return or_(*conditions)


def negate(condition: Condition) -> Condition:
    return not_(condition)


def exists_in(session: Session, query: Select[str]) -> bool:
    return bool(session.scalar(select(query.exists())))


def count_of(session: Session, query: Select[str]) -> int:
    """How many rows ``query`` selects."""
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
