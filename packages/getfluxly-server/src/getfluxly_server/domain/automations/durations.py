"""ISO 8601 durations (``PT15M``, ``P3D``, ``P1W``, ``-P3D``) as :class:`~datetime.timedelta`.

Only fixed lengths are accepted: weeks, days, hours, minutes, seconds. Years and months are
refused (a month is not a fixed number of days; say ``P30D``), so a duration means the same
thing whenever it is applied.
"""

from __future__ import annotations

import re
from datetime import timedelta

from getfluxly_server.domain.errors import ValidationFailed

_DURATION = re.compile(
    r"(?P<sign>[-+])?P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
#: Longer is surely a mistake (and would overflow datetimes).
LONGEST = timedelta(days=3650)


def parse_duration(value: object, path: str, *, signed: bool = False) -> timedelta:
    """``value`` as a duration; ``validation_error`` with ``field=path`` if it is not one.
    ``signed``: a leading ``-`` is allowed (an offset); otherwise it must be positive."""
    if not isinstance(value, str):
        raise ValidationFailed(
            f"{path}: give an ISO 8601 duration such as PT15M or P3D", field=path
        )
    text = value.strip()
    found = _DURATION.fullmatch(text)
    given = found is not None and any(v for k, v in found.groupdict().items() if k != "sign")
    if found is None or not given or text.endswith("T"):
        hint = " (years and months are not fixed lengths: use days, e.g. P30D)"
        extra = hint if re.search(r"\d+[YM]", text.split("T")[0]) else ""
        raise ValidationFailed(
            f"{path}: {value[:40]!r} is not an ISO 8601 duration such as PT15M, P3D or P1W{extra}",
            field=path,
        )
    parts = found.groupdict()
    try:
        amount = timedelta(
            weeks=int(parts["weeks"] or 0),
            days=int(parts["days"] or 0),
            hours=int(parts["hours"] or 0),
            minutes=int(parts["minutes"] or 0),
            seconds=float(parts["seconds"] or 0),
        )
    except (OverflowError, ValueError):  # beyond timedelta's 999,999,999 days, or int()'s digits
        raise ValidationFailed(f"{path}: {value[:40]!r} is too long", field=path) from None
    negative = parts["sign"] == "-"
    if negative and not signed:
        raise ValidationFailed(f"{path}: a duration here cannot be negative", field=path)
    if amount > LONGEST:
        raise ValidationFailed(f"{path}: at most {LONGEST.days} days", field=path)
    if amount <= timedelta(0) and not signed:
        raise ValidationFailed(f"{path}: the duration must be longer than zero", field=path)
    return -amount if negative else amount
