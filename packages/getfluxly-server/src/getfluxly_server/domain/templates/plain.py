"""Templates made only of text and plain ``{{ path }}`` outputs, rendered without Liquid's
render context.

Most message templates are such a template in some field: a subject greeting the profile by
name, a text part naming a few traits. Through Liquid each field costs a render context, a
scope chain and a walk of its nodes (measured by the broadcast benchmark: about a fifth of a
delivery worker's CPU per message went to rendering two such fields). :func:`render_plain`
fills in a plan read once from the template's nodes (text, and variable paths without a
filter) and gives exactly Liquid's text: each value stringified by Liquid's own
``to_liquid_string`` (its HTML escaping included when the environment autoescapes).

It only does so when every variable is found as Liquid finds it in the simplest case: the
path's root a key of the values, then each segment a key of a dict or an index in range of a
list. Anything else (an undefined variable, ``.size``/``.first``/``.last`` of something
without such a key, a string indexed, output past the limit) returns None, and the caller
renders through Liquid, which then also reports what it must (limits, undefined names).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from liquid import BoundTemplate
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions.filtered import FilteredExpression
from liquid.builtin.expressions.path import Path
from liquid.builtin.output import OutputNode
from liquid.stringify import to_liquid_string

#: A field's plan: literal text (str) and variable paths (tuple of str/int segments).
Plan = tuple[str | tuple[str | int, ...], ...]

#: Plans by template (the template is kept with its plan, so its id is not reused).
_PLANS: dict[int, tuple[BoundTemplate, Plan | None]] = {}
_PLANS_LOCK = threading.Lock()
#: Templates whose plans are kept (the template cache keeps a few hundred at most).
MAX_PLANS = 4096


def plan_of(template: BoundTemplate) -> Plan | None:
    """The template's plan, or None if it has anything but text and plain outputs."""
    kept = _PLANS.get(id(template))
    if kept is not None and kept[0] is template:
        return kept[1]
    plan = _read(template)
    with _PLANS_LOCK:
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        _PLANS[id(template)] = (template, plan)
    return plan


def _read(template: BoundTemplate) -> Plan | None:
    parts: list[str | tuple[str | int, ...]] = []
    for node in template.nodes:
        if type(node) is ContentNode:
            parts.append(node.text)
            continue
        if type(node) is not OutputNode:
            return None
        expression = node.expression
        if type(expression) is not FilteredExpression or expression.filters:
            return None
        path = expression.left
        if type(path) is not Path or not path.path or not isinstance(path.path[0], str):
            return None
        segments = tuple(path.path)
        if not all(isinstance(s, str | int) and not isinstance(s, bool) for s in segments):
            return None  # (a nested path: a[b])
        parts.append(segments)  # type: ignore[arg-type]
    return tuple(parts)


def render_plain(template: BoundTemplate, values: Mapping[str, object], limit: int) -> str | None:
    """The template rendered with ``values`` (plain data), or None: not a plain template,
    a variable not found as described in the module docstring, or more than ``limit``
    characters."""
    plan = plan_of(template)
    if plan is None:
        return None
    autoescape = template.env.autoescape
    out: list[str] = []
    for part in plan:
        if type(part) is str:
            out.append(part)
            continue
        value: object = values
        for segment in part:
            if type(value) is dict and type(segment) is str:
                if segment not in value:
                    return None
                value = value[segment]
            elif type(value) is list and type(segment) is int and 0 <= segment < len(value):
                value = value[segment]
            else:
                return None
        out.append(to_liquid_string(value, autoescape))
    text = "".join(out)
    return text if len(text) <= limit else None
