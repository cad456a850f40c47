"""A segment rule as typed values (engine spec section 3), made by ``rules.parse``.

Values are frozen and hashable; durations are :class:`~datetime.timedelta`; a rule never
holds the time it is evaluated at (``now`` is given to ``matches`` and ``member_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

#: A JSON scalar a condition compares with (``None`` is never one: use ``exists``).
Scalar = str | int | float | bool


class Op(StrEnum):
    """How a trait (or an event property) is compared with a rule's value."""

    EQ = "eq"
    NEQ = "neq"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    CONTAINS = "contains"
    IN = "in"
    EXISTS = "exists"
    NOT_EXISTS = "not_exists"
    #: The trait is a date (ISO 8601 text) at most ``value`` before now, and not after now.
    WITHIN_LAST = "within_last"
    #: The trait is a date more than ``value`` before now.
    BEFORE_LAST = "before_last"


#: Operators that compare with a duration and the time of evaluation (traits only).
TIME_OPS = frozenset({Op.WITHIN_LAST, Op.BEFORE_LAST})


class CountOp(StrEnum):
    GTE = "gte"
    LTE = "lte"
    EQ = "eq"


class EmailActivity(StrEnum):
    """What happened to a profile's mail. ``sent``: a message reached ``sent`` or a status
    after it; the others: a feedback event of that type was recorded (opens and clicks made
    by machines are left out)."""

    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


@dataclass(frozen=True)
class Condition:
    """``key op value`` on a JSON object (a profile's traits, an event's properties).

    ``value`` by ``op``: a scalar (eq, neq, gt..lte, contains), a tuple of scalars (in), None
    (exists, not_exists), a positive timedelta (within_last, before_last).
    """

    key: str
    op: Op
    value: Scalar | tuple[Scalar, ...] | timedelta | None = None


@dataclass(frozen=True)
class All:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Not:
    rule: Rule


@dataclass(frozen=True)
class Trait:
    condition: Condition


@dataclass(frozen=True)
class Performed:
    """Performed ``event`` (whose properties meet every ``where``) a number of times that
    meets ``count_op count``, counting events of the last ``within`` (or ever)."""

    event: str
    where: tuple[Condition, ...] = ()
    count_op: CountOp = CountOp.GTE
    count: int = 1
    within: timedelta | None = None


@dataclass(frozen=True)
class Email:
    """At least one of the profile's messages (of ``automation_id``/``broadcast_id`` if
    given) had ``activity`` in the last ``within`` (or ever)."""

    activity: EmailActivity
    within: timedelta | None = None
    automation_id: str | None = None
    broadcast_id: str | None = None


@dataclass(frozen=True)
class Subscribed:
    """``subscribed=True``: the profile has an ``email`` trait not unsubscribed (from every
    marketing message, nor from ``group`` if given). ``False``: it has an address and it is
    unsubscribed. A profile with no address is neither (``not`` of the rule includes it)."""

    subscribed: bool
    group: str | None = None


Rule = All | AnyOf | Not | Trait | Performed | Email | Subscribed
