"""ISO 8601 durations (``PT15M``, ``P3D``, ``P1W``, ``P1DT12H``) as fixed lengths of time.

Only the parts of fixed length are accepted: weeks, days, hours, minutes, seconds. Months and
years have no fixed length (``P1M`` is 28 to 31 days), so a rule that said ``P1M`` would mean
something different each month; they are refused with a hint to count in days. A day is 24
hours (durations are UTC arithmetic, not calendar arithmetic).
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?",
)
#: The longest duration accepted: a century (any longer is a mistake, and would overflow
#: date arithmetic near the ends of the calendar).
LONGEST = timedelta(days=36_525)


class DurationError(ValueError):
    """Not a duration this engine accepts; the message says why and what to write."""


def parse_duration(text: object) -> timedelta:
    """The length of an ISO 8601 duration: positive, at most :data:`LONGEST`."""
    if not isinstance(text, str):
        raise DurationError("must be an ISO 8601 duration such as PT15M, P3D or P1W (text)")
    match = _DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        if re.fullmatch(r"P(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T.*)?", text) and re.search(
            r"\d+[YM]", text.split("T")[0]
        ):
            raise DurationError(
                f"{text!r}: months and years have no fixed length; count in days (P30D, P365D)"
            )
        raise DurationError(
            f"{text!r} is not an ISO 8601 duration (write PT15M, PT2H, P3D, P1W or P1DT12H)"
        )
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    try:
        length = timedelta(**parts)
    except OverflowError:
        length = LONGEST + timedelta(days=1)
    if length <= timedelta(0):
        raise DurationError(f"{text!r} is no time at all; a duration must be positive")
    if length > LONGEST:
        raise DurationError(f"{text!r} is longer than a century")
    return length
