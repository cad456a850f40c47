"""An automation's definition (engine spec section 4), parsed and checked.

:func:`parse` turns the JSON a client sent (``trigger``, ``steps``, ``reentry``, ``exit_on``,
``quiet_hours``, ``frequency_cap``) into frozen dataclasses, or raises ``validation_error``
whose ``field`` is the JSON path of the first fault (``steps[1].on_event[0].duration``).
:func:`check_references` then checks what only the database knows: templates, segments and
providers named exist in the project. The stored definition is the JSON as sent (it is
parsed again when a run needs it), so an answer shows exactly what the client wrote.

Step ids are unique across the whole automation, nested steps included, so a run's position
is one step id, and :attr:`Definition.next_of` says where a run goes after each step: the
next step of the same list, else (at the end of a branch's or a wait's list) the step after
that branch or wait, else nowhere (the run completes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from getfluxly_server.domain.automations.durations import parse_duration
from getfluxly_server.domain.automations.rules import parse_rule
from getfluxly_server.domain.errors import ValidationFailed

STEP_TYPES = (
    "send_email", "delay", "wait_for_event", "branch", "update_traits", "webhook", "exit",
)  # fmt: skip
WHERE_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "exists", "not_exists")
_STEP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
#: Deepest nesting of branches and waits (a guard against pathological definitions).
MAX_DEPTH = 16
MAX_STEPS = 500


@dataclass(frozen=True)
class Condition:
    """One ``where`` test on an event's properties."""

    property: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class EventTrigger:
    event: str
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class SegmentTrigger:
    segment_id: str
    kind: Literal["entered", "left"]


@dataclass(frozen=True)
class DateTrigger:
    trait: str
    offset: timedelta


Trigger = EventTrigger | SegmentTrigger | DateTrigger


@dataclass(frozen=True)
class Until:
    """A time of day and the ISO weekdays (1 Monday ... 7 Sunday) it may fall on."""

    at: time
    weekdays: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """One step; ``type`` says which of the optional fields are set."""

    id: str
    type: str
    template_id: str | None = None
    provider_id: str | None = None
    duration: timedelta | None = None
    until: Until | None = None
    event: str | None = None
    where: tuple[Condition, ...] = ()
    timeout: timedelta | None = None
    on_event: tuple[Step, ...] = ()
    on_timeout: tuple[Step, ...] = ()
    rule: Any = None
    then: tuple[Step, ...] = ()
    otherwise: tuple[Step, ...] = ()
    traits: Mapping[str, Any] = field(default_factory=dict)
    url: str | None = None
    body: Any = None


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    action: Literal["postpone", "skip"]


@dataclass(frozen=True)
class FrequencyCap:
    max: int
    per: timedelta


@dataclass(frozen=True)
class Reentry:
    mode: Literal["once", "always", "after"]
    after: timedelta | None = None


@dataclass(frozen=True)
class Definition:
    trigger: Trigger
    steps: tuple[Step, ...]
    reentry: Reentry = Reentry("once")
    exit_on: EventTrigger | None = None
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None
    #: Every step by id, nested ones included.
    by_id: Mapping[str, Step] = field(default_factory=dict)
    #: Where a run goes after each step (None: it completes).
    next_of: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def first(self) -> str | None:
        return self.steps[0].id if self.steps else None

    def after(self, steps: Sequence[Step], step_id: str) -> str | None:
        """The first of ``steps``, else where the run goes after ``step_id``."""
        return steps[0].id if steps else self.next_of[step_id]


def _fail(path: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{path}: {message}", field=path)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "must be a JSON object")
    return value


def _only(value: dict[str, Any], path: str, allowed: Sequence[str]) -> None:
    for key in value:
        if key not in allowed:
            raise _fail(f"{path}.{key}", f"is not a field here (expected {', '.join(allowed)})")


def _name(value: Any, path: str, what: str = "an event name") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise _fail(path, f"must be {what} of 1-64 characters")
    return value


def _clock(value: Any, path: str) -> time:
    found = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise _fail(path, "must be a time of day as HH:MM (24-hour), e.g. 09:00")
    return time(int(found.group(1)), int(found.group(2)))


def parse_where(value: Any, path: str) -> tuple[Condition, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(path, 'must be a list of {"property", "op", "value"}')
    conditions = []
    for index, item in enumerate(value):
        at = f"{path}[{index}]"
        item = _object(item, at)
        _only(item, at, ("property", "op", "value"))
        prop = _name(item.get("property"), f"{at}.property", "a property name")
        op = item.get("op", "eq")
        if op not in WHERE_OPS:
            raise _fail(f"{at}.op", f"must be one of {', '.join(WHERE_OPS)}")
        if op not in ("exists", "not_exists") and "value" not in item:
            raise _fail(f"{at}.value", "is required for this op")
        if op == "in" and not isinstance(item.get("value"), list):
            raise _fail(f"{at}.value", "must be a list for op in")
        conditions.append(Condition(prop, op, item.get("value")))
    return tuple(conditions)


def _event_filter(value: Any, path: str) -> EventTrigger:
    value = _object(value, path)
    _only(value, path, ("event", "where"))
    return EventTrigger(
        _name(value.get("event"), f"{path}.event"), parse_where(value.get("where"), f"{path}.where")
    )


def parse_trigger(value: Any, path: str = "trigger") -> Trigger:
    value = _object(value, path)
    kinds = [k for k in ("event", "segment_entered", "segment_left", "date_trait") if k in value]
    if len(kinds) != 1:
        raise _fail(path, "give exactly one of event, segment_entered, segment_left, date_trait")
    kind = kinds[0]
    if kind == "event":
        return _event_filter(value, path)
    if kind in ("segment_entered", "segment_left"):
        _only(value, path, (kind,))
        segment = value[kind]
        if not isinstance(segment, str) or not segment.startswith("seg_"):
            raise _fail(f"{path}.{kind}", "must be a segment id (seg_...)")
        return SegmentTrigger(segment, "entered" if kind == "segment_entered" else "left")
    _only(value, path, ("date_trait", "offset"))
    trait = _name(value["date_trait"], f"{path}.date_trait", "a trait name")
    offset = (
        parse_duration(value["offset"], f"{path}.offset", signed=True)
        if value.get("offset") is not None
        else timedelta(0)
    )
    return DateTrigger(trait, offset)


_FIELDS: dict[str, tuple[str, ...]] = {
    "send_email": ("template_id", "provider_id"),
    "delay": ("duration", "until"),
    "wait_for_event": ("event", "where", "timeout", "on_event", "on_timeout"),
    "branch": ("rule", "then", "else"),
    "update_traits": ("traits",),
    "webhook": ("url", "body"),
    "exit": (),
}


class _Walker:
    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self.count = 0

    def steps(self, value: Any, path: str, depth: int = 0) -> tuple[Step, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _fail(path, "must be a list of steps")
        if depth > MAX_DEPTH:
            raise _fail(path, f"steps nest at most {MAX_DEPTH} deep")
        return tuple(self.step(item, f"{path}[{i}]", depth) for i, item in enumerate(value))

    def step(self, value: Any, path: str, depth: int) -> Step:
        value = _object(value, path)
        self.count += 1
        if self.count > MAX_STEPS:
            raise _fail(path, f"an automation has at most {MAX_STEPS} steps")
        step_id = value.get("id")
        if not isinstance(step_id, str) or _STEP_ID.fullmatch(step_id) is None:
            raise _fail(f"{path}.id", "every step needs an id: 1-64 of A-Z a-z 0-9 _ . : -")
        if step_id in self.seen:
            raise _fail(
                f"{path}.id", f"duplicate step id {step_id!r} (also at {self.seen[step_id]})"
            )
        self.seen[step_id] = path
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in _FIELDS:  # a list or object: unhashable
            raise _fail(
                f"{path}.type", f"unknown step type {kind!r}; one of {', '.join(STEP_TYPES)}"
            )
        _only(value, path, ("id", "type", *_FIELDS[kind]))
        if kind == "send_email":
            template = value.get("template_id")
            if not isinstance(template, str) or not template:
                raise _fail(f"{path}.template_id", "is required (a template of this project)")
            provider = value.get("provider_id")
            if provider is not None and (not isinstance(provider, str) or not provider):
                raise _fail(f"{path}.provider_id", "must be an email provider id")
            return Step(step_id, kind, template_id=template, provider_id=provider)
        if kind == "delay":
            if ("duration" in value) == ("until" in value):
                raise _fail(path, "a delay takes either duration or until")
            if "duration" in value:
                return Step(
                    step_id, kind, duration=parse_duration(value["duration"], f"{path}.duration")
                )
            return Step(step_id, kind, until=_until(value["until"], f"{path}.until"))
        if kind == "wait_for_event":
            if "timeout" not in value:
                raise _fail(f"{path}.timeout", "is required (how long to wait, e.g. P3D)")
            return Step(
                step_id, kind,
                event=_name(value.get("event"), f"{path}.event"),
                where=parse_where(value.get("where"), f"{path}.where"),
                timeout=parse_duration(value["timeout"], f"{path}.timeout"),
                on_event=self.steps(value.get("on_event"), f"{path}.on_event", depth + 1),
                on_timeout=self.steps(value.get("on_timeout"), f"{path}.on_timeout", depth + 1),
            )  # fmt: skip
        if kind == "branch":
            if "rule" not in value:
                raise _fail(f"{path}.rule", "is required (a segment rule)")
            rule = value["rule"]
            parse_rule(rule, f"{path}.rule")
            return Step(
                step_id, kind, rule=rule,
                then=self.steps(value.get("then"), f"{path}.then", depth + 1),
                otherwise=self.steps(value.get("else"), f"{path}.else", depth + 1),
            )  # fmt: skip
        if kind == "update_traits":
            traits = _object(value.get("traits"), f"{path}.traits")
            if not traits:
                raise _fail(f"{path}.traits", "give at least one trait")
            return Step(step_id, kind, traits=traits)
        if kind == "webhook":
            url = value.get("url")
            if (
                not isinstance(url, str)
                or not re.match(r"https?://[^\s/]+", url)
                or len(url) > 2000
            ):
                raise _fail(f"{path}.url", "must be an http:// or https:// URL")
            return Step(step_id, kind, url=url, body=value.get("body"))
        return Step(step_id, kind)


def _until(value: Any, path: str) -> Until:
    value = _object(value, path)
    _only(value, path, ("time", "weekdays"))
    at = _clock(value.get("time"), f"{path}.time")
    days = value.get("weekdays", [1, 2, 3, 4, 5, 6, 7])
    if not isinstance(days, list) or not days:
        raise _fail(
            f"{path}.weekdays", "must be a non-empty list of ISO weekdays (1 Monday ... 7 Sunday)"
        )
    for index, day in enumerate(days):
        if not isinstance(day, int) or isinstance(day, bool) or not 1 <= day <= 7:
            raise _fail(
                f"{path}.weekdays[{index}]", "must be an ISO weekday, 1 (Monday) to 7 (Sunday)"
            )
    return Until(at, tuple(sorted(set(days))))


def _reentry(value: Any, path: str = "reentry") -> Reentry:
    if value is None or value == "once":
        return Reentry("once")
    if value == "always":
        return Reentry("always")
    if isinstance(value, dict) and set(value) == {"after"}:
        return Reentry("after", parse_duration(value["after"], f"{path}.after"))
    raise _fail(path, 'must be "once", "always" or {"after": duration}')


def _quiet(value: Any, path: str = "quiet_hours") -> QuietHours | None:
    if value is None:
        return None
    value = _object(value, path)
    _only(value, path, ("start", "end", "action"))
    start, end = (
        _clock(value.get("start"), f"{path}.start"),
        _clock(value.get("end"), f"{path}.end"),
    )
    if start == end:
        raise _fail(f"{path}.end", "must differ from start")
    action = value.get("action", "postpone")
    if action not in ("postpone", "skip"):
        raise _fail(f"{path}.action", 'must be "postpone" or "skip"')
    return QuietHours(start, end, action)


def _cap(value: Any, path: str = "frequency_cap") -> FrequencyCap | None:
    if value is None:
        return None
    value = _object(value, path)
    _only(value, path, ("max", "per"))
    most = value.get("max")
    if not isinstance(most, int) or isinstance(most, bool) or not 1 <= most <= 10_000:
        raise _fail(f"{path}.max", "must be a whole number from 1 to 10000")
    return FrequencyCap(most, parse_duration(value.get("per"), f"{path}.per"))


def _flatten(steps: Sequence[Step], after: str | None, into: dict[str, str | None]) -> None:
    for index, step in enumerate(steps):
        following = steps[index + 1].id if index + 1 < len(steps) else after
        into[step.id] = following
        for nested in (step.on_event, step.on_timeout, step.then, step.otherwise):
            _flatten(nested, following, into)


def walk(steps: Sequence[Step]) -> Iterator[Step]:
    """Every step, nested ones included, depth first."""
    for step in steps:
        yield step
        for nested in (step.on_event, step.on_timeout, step.then, step.otherwise):
            yield from walk(nested)


def parse(body: Mapping[str, Any]) -> Definition:
    """The definition in ``body`` (the fields of :data:`FIELDS`), checked (see module)."""
    trigger = parse_trigger(body.get("trigger"))
    walker = _Walker()
    if not isinstance(body.get("steps"), list) or not body["steps"]:
        raise _fail("steps", "give at least one step")
    steps = walker.steps(body["steps"], "steps")
    exit_on = _event_filter(body["exit_on"], "exit_on") if body.get("exit_on") is not None else None
    next_of: dict[str, str | None] = {}
    _flatten(steps, None, next_of)
    return Definition(
        trigger=trigger, steps=steps, reentry=_reentry(body.get("reentry")), exit_on=exit_on,
        quiet_hours=_quiet(body.get("quiet_hours")), frequency_cap=_cap(body.get("frequency_cap")),
        by_id={s.id: s for s in walk(steps)}, next_of=next_of,
    )  # fmt: skip


#: The definition's fields, as stored and answered.
FIELDS = ("trigger", "steps", "reentry", "exit_on", "quiet_hours", "frequency_cap")


def timezone_named(value: Any) -> ZoneInfo | None:
    """The IANA zone ``value`` names, or None when it names none."""
    if not isinstance(value, str) or not value or len(value) > 64 or ".." in value:
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
