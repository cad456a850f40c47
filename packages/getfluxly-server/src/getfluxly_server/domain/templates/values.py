"""The values a template sees: the variables of the contract, as plain data only.

Variables (the contract of ``getfluxly-engine.md`` section 1), built by :func:`variables`:

* ``profile``: the profile's traits, plus ``profile.id`` and ``profile.email`` (which a trait
  of the same name cannot override);
* ``event``: ``event.name`` and ``event.properties`` of the triggering event;
* ``data``: the transactional call's ``data``;
* ``project``: what the caller passes about the project (e.g. ``id``, ``name``);
* ``unsubscribe_url``, ``preferences_url``.

What is not given is undefined, and an undefined variable renders empty (``| default: "x"``
gives it a value); a real render never fails for one. A preview lists them as warnings.

Everything is copied into plain dict/list/str/int/float/bool/None (:func:`plain_data`) before
it reaches a template, so no Python object (and none of its attributes or methods) can.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from getfluxly_server.domain.errors import ValidationFailed


def variables(
    *,
    profile_id: str | None = None,
    email: str | None = None,
    traits: Mapping[str, object] | None = None,
    event_name: str | None = None,
    event_properties: Mapping[str, object] | None = None,
    data: Mapping[str, object] | None = None,
    project: Mapping[str, object] | None = None,
    unsubscribe_url: str | None = None,
    preferences_url: str | None = None,
) -> dict[str, Any]:
    """The template variables, as plain data; what is None stays undefined.

    Raises:
        ValidationFailed: a value is not JSON-like (it never comes from JSON, so a caller's bug).
    """
    out: dict[str, object] = {}
    if profile_id is not None or email is not None or traits is not None:
        profile: dict[str, object] = dict(traits or {})
        if profile_id is not None:
            profile["id"] = profile_id
        if email is not None:
            profile["email"] = email
        out["profile"] = profile
    if event_name is not None or event_properties is not None:
        event: dict[str, object] = {"properties": dict(event_properties or {})}
        if event_name is not None:
            event["name"] = event_name
        out["event"] = event
    for name, value in (
        ("data", data),
        ("project", project),
        ("unsubscribe_url", unsubscribe_url),
        ("preferences_url", preferences_url),
    ):
        if value is not None:
            out[name] = value
    return plain_values(out)


def plain_values(values: Mapping[str, object]) -> dict[str, Any]:
    """``values`` as plain data (see :func:`plain_data`); an object is a ``validation_error``.

    The renderer calls it on whatever it is given, not only :func:`variables`' output: no
    object reaches Liquid whoever the caller is.
    """
    try:
        plain: dict[str, Any] = plain_data(values)
    except TypeError as err:
        raise ValidationFailed(str(err), field="data") from None
    return plain


_SCALARS = (str, int, float, bool, type(None))


def plain_data(value: object, *, _depth: int = 0) -> Any:
    """A copy of ``value`` made only of dict/list/str/int/float/bool/None, for rendering.

    Mappings become dicts with string keys, tuples and lists become lists, dates and times
    become ISO 8601 text, Decimals become floats; subclasses of ``str`` (``Markup`` among them:
    it would skip escaping) become plain ``str``. Anything else is refused with a
    ``TypeError``: no object reaches a template, so none of its attributes or methods can.
    """
    if _depth > 64:
        raise TypeError("template data is nested more than 64 levels deep")
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)  # an exact str copy, whatever the subclass's __str__ says
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): plain_data(v, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v, _depth=_depth + 1) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    raise TypeError(
        f"template data must be JSON-like (dict, list, str, number, bool, None), "
        f"not {kind.__name__}"
    )
