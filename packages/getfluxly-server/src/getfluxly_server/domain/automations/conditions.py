"""``where`` conditions on an event's properties (triggers, waits, exit_on).

A property is looked up by name, dotted names reaching into objects (``plan.name``). Ops as
in segment rules: ``eq``, ``neq``, ``gt``/``gte``/``lt``/``lte`` (numbers with numbers, text
with text; anything else does not match), ``contains`` (text in text, or an item of a list),
``in`` (the value is one of a list), ``exists``, ``not_exists``. All conditions must hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from getfluxly_server.domain.automations.definition import Condition, EventTrigger

_MISSING = object()


def _lookup(properties: Mapping[str, Any], name: str) -> Any:
    if name in properties:
        return properties[name]
    node: Any = properties
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def holds(condition: Condition, properties: Mapping[str, Any]) -> bool:
    found = _lookup(properties, condition.property)
    op, value = condition.op, condition.value
    if op == "exists":
        return found is not _MISSING and found is not None
    if op == "not_exists":
        return found is _MISSING or found is None
    if found is _MISSING:
        return op == "neq"
    if op == "eq":
        return bool(found == value)
    if op == "neq":
        return bool(found != value)
    if op == "in":
        return isinstance(value, list) and found in value
    if op == "contains":
        if isinstance(found, str) and isinstance(value, str):
            return value in found
        return isinstance(found, list) and value in found
    if not _comparable(found, value):
        return False
    if op == "gt":
        return bool(found > value)
    if op == "gte":
        return bool(found >= value)
    if op == "lt":
        return bool(found < value)
    return bool(found <= value)  # lte


def all_hold(conditions: Sequence[Condition], properties: Mapping[str, Any]) -> bool:
    return all(holds(c, properties) for c in conditions)


def event_matches(wanted: EventTrigger, name: str | None, properties: Mapping[str, Any]) -> bool:
    """Whether an event called ``name`` with ``properties`` is the one ``wanted``."""
    return name == wanted.event and all_hold(wanted.where, properties or {})
