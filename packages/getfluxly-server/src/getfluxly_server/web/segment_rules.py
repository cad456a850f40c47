"""The segment rule builder: a plain form that writes the rule grammar of engine spec
section 3, and the way back from a saved rule to the form.

The form holds groups of conditions: "members match all|any of the groups", each group
"all|any of its conditions". Fields are named ``match``, ``g{G}_match`` and
``g{G}c{C}_{field}`` (``kind``: trait | event | email | subscribed, blank for an unused row;
``name`` (the trait, the event, or the subscription group), ``op``, ``value``, ``count_op``,
``count``, ``within``, ``activity`` (email), ``subscribed``). A group of
one condition is written as that condition, and a rule of one group as that group, so a
simple rule stays simple JSON.

A rule the form cannot show (``not``, event ``where`` filters, an email rule naming an
automation or a broadcast, deeper nesting) is edited as JSON; :func:`from_rule` says so
(``fits`` false). Nothing here checks the rule: ``domain.segments.rules.parse`` does, and
the JSON path of its fault is mapped back to the row it concerns (:func:`row_for`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.segments.rules import CountOp, EmailActivity, Op

KINDS = ("trait", "event", "email", "subscribed")
TRAIT_OPS = tuple(op.value for op in Op)
COUNT_OPS = tuple(op.value for op in CountOp)
ACTIVITIES = tuple(a.value for a in EmailActivity)
MATCHES = ("all", "any")
#: Ops that take no value, and those whose value is a duration.
NO_VALUE = ("exists", "not_exists")
DURATION_OPS = ("within_last", "before_last")
#: The most groups and conditions per group a form may post (more is a hand-made form).
MAX_GROUPS = 20
MAX_ROWS = 50
_ROW_FIELD = re.compile(r"g(\d{1,2})c(\d{1,2})_kind")
_GROUP_FIELD = re.compile(r"g(\d{1,2})_match")


@dataclass
class Row:
    """One condition of the form (``kind`` blank: an unused row)."""

    kind: str = ""
    name: str = ""
    op: str = "eq"
    value: str = ""
    count_op: str = "gte"
    count: str = "1"
    within: str = ""
    subscribed: str = "true"
    activity: str = "sent"
    #: Where the row's condition is in the built rule (a JSON path), once built.
    path: str = ""


@dataclass
class Group:
    match: str = "all"
    rows: list[Row] = field(default_factory=list)


@dataclass
class Builder:
    match: str = "all"
    groups: list[Group] = field(default_factory=list)
    #: False when a saved rule has parts the form cannot show (edit it as JSON).
    fits: bool = True

    def with_blanks(self) -> Builder:
        """The form as shown: a blank row after each group's rows, and a blank group."""
        groups = [Group(g.match, [*g.rows, Row()]) for g in self.groups if g.rows]
        groups.append(Group("all", [Row(), Row()]))
        return Builder(self.match, groups, self.fits)


def _choice(value: str, allowed: tuple[str, ...], default: str) -> str:
    return value if value in allowed else default


def from_form(form: Mapping[str, str]) -> Builder:
    """The builder's rows as posted (unused rows left out)."""
    groups: dict[int, dict[int, Row]] = {}
    for name in form:
        found = _ROW_FIELD.fullmatch(name)
        if found is None or not form[name].strip():
            continue
        g, c = int(found[1]), int(found[2])
        if g >= MAX_GROUPS or c >= MAX_ROWS:
            continue
        prefix = f"g{g}c{c}_"

        def get(key: str, default: str = "", prefix: str = prefix) -> str:
            return form.get(prefix + key, default).strip()

        groups.setdefault(g, {})[c] = Row(
            kind=_choice(get("kind"), KINDS, ""), name=get("name"),
            op=_choice(get("op"), TRAIT_OPS, "eq"), value=form.get(prefix + "value", ""),
            count_op=_choice(get("count_op"), COUNT_OPS, "gte"), count=get("count", "1"),
            within=get("within"), subscribed=_choice(get("subscribed"), ("true", "false"), "true"),
            activity=_choice(get("activity"), ACTIVITIES, "sent"),
        )  # fmt: skip
    built = Builder(_choice(form.get("match", ""), MATCHES, "all"))
    for g in sorted(groups):
        match = _choice(form.get(f"g{g}_match", ""), MATCHES, "all")
        rows = [groups[g][c] for c in sorted(groups[g]) if groups[g][c].kind]
        if rows:
            built.groups.append(Group(match, rows))
    return built


def _typed(raw: str) -> Any:
    """A value as typed: JSON when it reads as a JSON scalar (``42``, ``true``,
    ``"42"``), else the text itself (``pro``)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, str | int | float | bool) else raw


def _condition(row: Row) -> dict[str, Any]:
    if row.kind == "trait":
        node: dict[str, Any] = {"trait": row.name, "op": row.op}
        if row.op in NO_VALUE:
            return node
        if row.op in DURATION_OPS:
            node["value"] = row.value.strip()
        elif row.op == "in":
            # A JSON list as typed, else values separated by commas.
            try:
                listed = json.loads(row.value)
            except ValueError:
                listed = None
            node["value"] = (
                listed
                if isinstance(listed, list)
                else [_typed(v.strip()) for v in row.value.split(",") if v.strip()]
            )
        else:
            node["value"] = _typed(row.value)
        return node
    if row.kind == "event":
        node = {"event": row.name}
        count: Any = int(row.count) if row.count.isdigit() else row.count
        if (row.count_op, count) != ("gte", 1):
            node["count"] = {row.count_op: count}
    elif row.kind == "email":
        node = {"email": row.activity}
    else:
        node = {"subscribed": row.subscribed == "true"}
        if row.name:
            node["group"] = row.name
        return node
    if row.within:
        node["within"] = row.within
    return node


def to_rule(builder: Builder) -> Any:
    """The rule the form describes; each row's ``path`` is set to where its condition is.

    Raises:
        ValidationFailed: the form has no condition (``field`` ``rule``).
    """
    groups = [g for g in builder.groups if g.rows]
    if not groups:
        raise ValidationFailed(
            "rule: add at least one condition (choose what it tests in the first row)",
            field="rule",
        )
    parts: list[Any] = []
    for gi, group in enumerate(groups):
        base = "rule" if len(groups) == 1 else f"rule.{builder.match}[{gi}]"
        if len(group.rows) == 1:
            group.rows[0].path = base
            parts.append(_condition(group.rows[0]))
            continue
        for ci, row in enumerate(group.rows):
            row.path = f"{base}.{group.match}[{ci}]"
        parts.append({group.match: [_condition(r) for r in group.rows]})
    return parts[0] if len(parts) == 1 else {builder.match: parts}


def row_for(builder: Builder, fault: str) -> Row | None:
    """The row whose condition holds the JSON path ``fault`` (the deepest that does)."""
    best: Row | None = None
    for group in builder.groups:
        for row in group.rows:
            p = row.path
            holds = p and (fault == p or fault.startswith((p + ".", p + "[")))
            if holds and (best is None or len(p) > len(best.path)):
                best = row
    return best


# -- from a saved rule back to the form ------------------------------------------------------


def _row(node: Any) -> Row | None:
    if not isinstance(node, dict):
        return None
    keys = set(node)
    if "trait" in node and keys <= {"trait", "op", "value"}:
        value = node.get("value", "")
        # Text that would read back as something else ("21", "true") is shown quoted.
        as_text = isinstance(value, str) and _typed(value) == value
        shown = value if as_text or node.get("op") in DURATION_OPS else json.dumps(value)
        return Row("trait", str(node["trait"]), str(node.get("op", "eq")), shown)
    if "event" in node and keys <= {"event", "count", "within"}:
        count = node.get("count", {"gte": 1})
        if not isinstance(count, dict) or len(count) != 1:
            return None
        ((count_op, number),) = count.items()
        return Row("event", str(node["event"]), count_op=str(count_op), count=str(number),
                   within=str(node.get("within", "")))  # fmt: skip
    if "email" in node and keys <= {"email", "within"}:
        return Row("email", within=str(node.get("within", "")), activity=str(node["email"]))
    if "subscribed" in node and keys <= {"subscribed", "group"}:
        return Row("subscribed", str(node.get("group", "")),
                   subscribed="true" if node["subscribed"] is True else "false")  # fmt: skip
    return None


def _group(node: Any) -> Group | None:
    """A condition (a group of one) or ``{all|any: [conditions]}``."""
    row = _row(node)
    if row is not None:
        return Group("all", [row])
    if isinstance(node, dict) and len(node) == 1:
        ((match, items),) = node.items()
        if match in MATCHES and isinstance(items, list) and items:
            rows = [_row(item) for item in items]
            if all(r is not None for r in rows):
                return Group(match, [r for r in rows if r is not None])
    return None


def from_rule(rule: Any) -> Builder:
    """The form for a saved rule (``fits`` false, and no rows, when it cannot show it)."""
    single = _group(rule)
    if single is not None:
        return Builder("all", [single])
    if isinstance(rule, dict) and len(rule) == 1:
        ((match, items),) = rule.items()
        if match in MATCHES and isinstance(items, list) and items:
            groups = [_group(item) for item in items]
            if all(g is not None for g in groups):
                return Builder(match, [g for g in groups if g is not None])
    return Builder(fits=False)
