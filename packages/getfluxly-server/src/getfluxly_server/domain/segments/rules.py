"""Segment rules (engine spec section 3): the JSON grammar parsed into typed values
(:mod:`.model`), validated with the JSON path of each fault, and evaluated in the database.

::

    rule = parse({"event": "login", "count": {"gte": 3}, "within": "P7D"})
    member_ids(session, project_id, rule, now)          # a SELECT of the matching profile ids
    matches(session, project_id, profile_id, rule, now)  # one profile: bool

The grammar::

    {"all": [rule, ...]}  {"any": [rule, ...]}  {"not": rule}
    {"trait": "plan", "op": <op>, "value": ...}
    {"event": "signed_up", "where": [{"property", "op", "value"}],
     "count": {"gte"|"lte"|"eq": N} (default gte 1), "within": duration?}
    {"email": "sent"|"delivered"|"opened"|"clicked"|"bounced"|"complained",
     "within": duration?, "automation_id"?, "broadcast_id"?}
    {"subscribed": true|false, "group"?: "newsletter"}

Comparisons are typed, as JSON is: ``{"op": "eq", "value": 42}`` matches the number 42, not
the text "42"; ``gt``/``gte``/``lt``/``lte`` compare numbers with numbers and text with text
(by code point, so ISO 8601 dates in one format sort as times); ``contains`` is a substring
of a text value, or an element of an array value; ``in`` is ``eq`` to any of a list;
``neq`` is ``not eq`` (a profile without the trait is "not equal"); ``exists`` means present
and not null. ``within_last``/``before_last`` read a date trait (ISO 8601 text, UTC when it
has no offset): within the duration before now (and not in the future), or longer ago.

Only the merged-into survivors of a project that are not erased are ever members.
A rule is evaluated as one SQL query whatever its shape (``all``/``any``/``not`` become
AND/OR/NOT over conditions each of which is true or false, never unknown).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.feedback.record import PROFILE_EVENTS
from getfluxly_server.domain.segments import evaluate
from getfluxly_server.domain.segments.durations import DurationError, parse_duration
from getfluxly_server.domain.segments.model import (
    TIME_OPS,
    All,
    AnyOf,
    Condition,
    CountOp,
    Email,
    EmailActivity,
    Not,
    Op,
    Performed,
    Rule,
    Scalar,
    Subscribed,
    Trait,
)
from getfluxly_server.storage.models import MessageEventType

__all__ = [
    "All",
    "AnyOf",
    "Condition",
    "CountOp",
    "Email",
    "EmailActivity",
    "Not",
    "Op",
    "Performed",
    "Reads",
    "Rule",
    "Subscribed",
    "Trait",
    "matches",
    "member_ids",
    "parse",
    "reads",
]

#: How deep ``all``/``any``/``not`` may nest, and how many rules one tree may hold: enough for
#: any segment a person writes, small enough that no rule makes a query the database chokes on.
MAX_DEPTH = 16
MAX_RULES = 200
#: The most values an ``in`` list, and the most ``where`` filters an event rule, may hold.
MAX_IN = 1_000
MAX_WHERE = 20
#: Longest trait or property name, event name (the events column), group name, id.
MAX_KEY = 255
MAX_EVENT = 64
MAX_GROUP = 64
MAX_ID = 32
MAX_TEXT = 1_000

_KINDS = ("all", "any", "not", "trait", "event", "email", "subscribed")
_FIELDS = {
    "all": {"all"},
    "any": {"any"},
    "not": {"not"},
    "trait": {"trait", "op", "value"},
    "event": {"event", "where", "count", "within"},
    "email": {"email", "within", "automation_id", "broadcast_id"},
    "subscribed": {"subscribed", "group"},
}
_PROPERTY_OPS = tuple(op.value for op in Op if op not in TIME_OPS)


def parse(rule: Any, path: str = "rule") -> Rule:
    """The typed rule of a JSON rule; ``ValidationFailed`` (``validation_error``) whose
    ``field`` is the JSON path of the first fault (``rule.all[1].value``), and whose detail
    starts with that path and says what to write instead."""
    counter = [0]
    return _rule(rule, path, 0, counter)


def matches(session: Session, project_id: str, profile_id: str, rule: Rule, now: datetime) -> bool:
    """Whether the profile is in the rule's segment at ``now`` (False for a profile merged
    into another, erased, or of another project)."""
    return evaluate.matches(session, project_id, profile_id, rule, now)


def member_ids(
    session: Session,
    project_id: str,
    rule: Rule,
    now: datetime,
    *,
    among: Collection[str] | None = None,
) -> Select[str]:
    """A SELECT of the ids of the project's profiles the rule matches at ``now`` (only those
    in ``among`` when given: the incremental path evaluates just the profiles an event
    touched). Run it, count it, or use it in an INSERT ... SELECT."""
    return evaluate.member_ids(session, project_id, rule, now, among=among)


@dataclass(frozen=True)
class Reads:
    """What a rule's truth depends on, so the engine knows which changes can move a
    profile in or out: the event names it counts, the trait names it reads (``email`` for
    ``subscribed``), whether time passing alone can change it (``within``, ``within_last``,
    ``before_last``), and whether it reads mail activity or subscription state (changed
    outside event processing), with the profile events recorded feedback adds that can
    change it (``email_clicked`` for a ``clicked`` rule, ``email_unsubscribed`` for
    ``subscribed``; for ``sent``, every one: feedback about a message left ``unknown`` moves
    it past ``sent``; a message the workers record ``sent`` reaches segments through
    ``domain.segments.sent``)."""

    events: frozenset[str]
    traits: frozenset[str]
    timed: bool
    email: bool
    subscriptions: bool
    #: Whether a date trait is compared with now (``within_last``, ``before_last``).
    timed_traits: bool = False
    #: Whether it reads ``{"email": "sent"}``: a message's status, which the delivery
    #: workers move with no event (they tell ``domain.segments.sent``).
    email_sent: bool = False
    #: The profile events of recorded feedback (``domain.feedback.record``) that can change
    #: the rule: a chunk of events holding one is evaluated at once for the profiles it
    #: touched, as an event rule's are.
    feedback: frozenset[str] = frozenset()


def reads(rule: Rule) -> Reads:
    events: set[str] = set()
    traits: set[str] = set()
    feedback: set[str] = set()
    flags = {
        "timed": False, "email": False, "subscriptions": False, "timed_traits": False,
        "email_sent": False,
    }  # fmt: skip

    def walk(node: Rule) -> None:
        match node:
            case All(rules) | AnyOf(rules):
                for child in rules:
                    walk(child)
            case Not(child):
                walk(child)
            case Trait(condition):
                traits.add(condition.key)
                flags["timed"] |= condition.op in TIME_OPS
                flags["timed_traits"] |= condition.op in TIME_OPS
            case Performed(event=event, within=within):
                events.add(event)
                flags["timed"] |= within is not None
            case Email(activity=activity, within=within):
                flags["email"] = True
                flags["timed"] |= within is not None
                if activity.value in PROFILE_EVENTS:
                    feedback.add(PROFILE_EVENTS[activity.value])
                if activity is EmailActivity.SENT:
                    flags["email_sent"] = True
                    feedback.update(PROFILE_EVENTS.values())
            case Subscribed():
                traits.add("email")
                flags["subscriptions"] = True
                feedback.add(PROFILE_EVENTS[MessageEventType.UNSUBSCRIBED.value])

    walk(rule)
    return Reads(frozenset(events), frozenset(traits), **flags, feedback=frozenset(feedback))


# -- parsing -----------------------------------------------------------------------------------


def _fail(path: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {message}", field=path)


def _rule(node: Any, path: str, depth: int, counter: list[int]) -> Rule:
    counter[0] += 1
    if counter[0] > MAX_RULES:
        raise _fail(path, f"a rule may hold at most {MAX_RULES} rules; split it into segments")
    if depth > MAX_DEPTH:
        raise _fail(path, f"rules may nest at most {MAX_DEPTH} deep")
    if not isinstance(node, dict):
        raise _fail(path, f"a rule is a JSON object with one of: {', '.join(_KINDS)}")
    kinds = [k for k in _KINDS if k in node]
    if len(kinds) != 1:
        found = " and ".join(kinds) if kinds else "none"
        raise _fail(path, f"a rule has exactly one of {', '.join(_KINDS)} (found {found})")
    kind = kinds[0]
    for key in node:
        if key not in _FIELDS[kind]:
            allowed = ", ".join(sorted(_FIELDS[kind]))
            raise _fail(_at(path, key), f"is not a field of a {kind} rule (its fields: {allowed})")
    if kind in ("all", "any"):
        children = node[kind]
        if not isinstance(children, list) or not children:
            raise _fail(_at(path, kind), "must be a non-empty list of rules")
        parsed = tuple(
            _rule(child, f"{path}.{kind}[{i}]", depth + 1, counter)
            for i, child in enumerate(children)
        )
        return All(parsed) if kind == "all" else AnyOf(parsed)
    if kind == "not":
        return Not(_rule(node["not"], f"{path}.not", depth + 1, counter))
    if kind == "trait":
        key = _key(node["trait"], _at(path, "trait"))
        return Trait(_condition(node, key, path, "op", tuple(o.value for o in Op)))
    if kind == "event":
        return _performed(node, path)
    if kind == "email":
        return _email(node, path)
    return _subscribed(node, path)


def _at(path: str, key: str) -> str:
    return f"{path}.{key}"


def _key(value: Any, path: str, longest: int = MAX_KEY) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "must be a non-empty name (text)")
    if len(value) > longest:
        raise _fail(path, f"must be at most {longest} characters")
    # Names travel inside SQLite JSON paths ($."name"), where a quote or backslash cannot be
    # written; nobody names a trait with control characters.
    if any(c in value for c in '"\\') or any(ord(c) < 32 for c in value):
        raise _fail(path, "must not contain quotes, backslashes or control characters")
    return value


def _condition(
    node: dict[str, Any], key: str, path: str, op_field: str, ops: tuple[str, ...]
) -> Condition:
    op_path = _at(path, op_field)
    if "op" not in node:
        raise _fail(op_path, f"is required (one of {', '.join(ops)})")
    raw = node["op"]
    if not isinstance(raw, str) or raw not in ops:
        raise _fail(op_path, f"must be one of {', '.join(ops)}")
    op = Op(raw)
    value_path = _at(path, "value")
    has_value = "value" in node
    value = node.get("value")
    if op in (Op.EXISTS, Op.NOT_EXISTS):
        if has_value:
            raise _fail(value_path, f"{op.value} takes no value (remove it)")
        return Condition(key, op)
    if not has_value:
        raise _fail(value_path, f"is required for {op.value}")
    if op in TIME_OPS:
        try:
            return Condition(key, op, parse_duration(value))
        except DurationError as exc:
            raise _fail(value_path, str(exc)) from None
    if op is Op.IN:
        if not isinstance(value, list) or not value:
            raise _fail(value_path, "in takes a non-empty list of values")
        if len(value) > MAX_IN:
            raise _fail(value_path, f"in takes at most {MAX_IN} values")
        return Condition(
            key, op, tuple(_scalar(v, f"{value_path}[{i}]") for i, v in enumerate(value))
        )
    scalar = _scalar(value, value_path)
    if op in (Op.GT, Op.GTE, Op.LT, Op.LTE) and isinstance(scalar, bool):
        raise _fail(value_path, f"{op.value} compares numbers or text, not true/false")
    if op is Op.CONTAINS and scalar == "":
        raise _fail(value_path, "contains takes a non-empty value")
    return Condition(key, op, scalar)


def _scalar(value: Any, path: str) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**63 - 1:
            raise _fail(path, "is out of range (a 64-bit integer at most)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, "must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _fail(path, f"must be at most {MAX_TEXT} characters")
        if "\x00" in value:  # no database text holds it (PostgreSQL refuses it)
            raise _fail(path, "must not contain NUL characters")
        return value
    raise _fail(path, "must be text, a number or true/false (null: use exists/not_exists)")


def _within(node: dict[str, Any], path: str) -> Any:
    if "within" not in node:
        return None
    try:
        return parse_duration(node["within"])
    except DurationError as exc:
        raise _fail(_at(path, "within"), str(exc)) from None


def _performed(node: dict[str, Any], path: str) -> Performed:
    event = _key(node["event"], _at(path, "event"), MAX_EVENT)
    where_raw = node.get("where", [])
    if not isinstance(where_raw, list):
        raise _fail(_at(path, "where"), "must be a list of {property, op, value} filters")
    if len(where_raw) > MAX_WHERE:
        raise _fail(_at(path, "where"), f"may hold at most {MAX_WHERE} filters")
    where = []
    for i, item in enumerate(where_raw):
        item_path = f"{path}.where[{i}]"
        if not isinstance(item, dict):
            raise _fail(item_path, "a filter is an object {property, op, value}")
        for field in item:
            if field not in ("property", "op", "value"):
                raise _fail(
                    _at(item_path, field), "is not a field of a filter (property, op, value)"
                )
        if "property" not in item:
            raise _fail(_at(item_path, "property"), "is required")
        key = _key(item["property"], _at(item_path, "property"))
        where.append(_condition(item, key, item_path, "op", _PROPERTY_OPS))
    count_op, count = CountOp.GTE, 1
    if "count" in node:
        count_path = _at(path, "count")
        raw = node["count"]
        if not isinstance(raw, dict) or len(raw) != 1:
            raise _fail(count_path, 'must be an object with one of gte, lte, eq: {"gte": 3}')
        ((name, number),) = raw.items()
        if name not in ("gte", "lte", "eq"):
            raise _fail(_at(count_path, name), "is not a count comparison (gte, lte or eq)")
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 1_000_000:
            raise _fail(_at(count_path, name), "must be a whole number from 0 to 1000000")
        count_op, count = CountOp(name), number
    return Performed(event, tuple(where), count_op, count, _within(node, path))


def _email(node: dict[str, Any], path: str) -> Email:
    activity = node["email"]
    names = tuple(a.value for a in EmailActivity)
    if not isinstance(activity, str) or activity not in names:
        raise _fail(_at(path, "email"), f"must be one of {', '.join(names)}")
    ids: dict[str, str | None] = {}
    for field, prefix in (("automation_id", "aut_"), ("broadcast_id", "brd_")):
        value = node.get(field)
        if value is not None and (
            not isinstance(value, str)
            or not value.startswith(prefix)
            or len(value) > MAX_ID
            or not value.isprintable()
        ):
            raise _fail(_at(path, field), f"must be an id ({prefix}...)")
        ids[field] = value
    return Email(EmailActivity(activity), _within(node, path), **ids)


def _subscribed(node: dict[str, Any], path: str) -> Subscribed:
    value = node["subscribed"]
    if not isinstance(value, bool):
        raise _fail(_at(path, "subscribed"), "must be true or false")
    group = node.get("group")
    if group is not None:
        group = _key(group, _at(path, "group"), MAX_GROUP)
    return Subscribed(value, group)
