"""Times of day in a profile's time zone: when a ``delay`` with ``until`` ends, and whether
a moment falls in quiet hours (and when they end).

A profile's zone is its ``timezone`` trait when that names an IANA zone, else its project's
(``projects.timezone``), else UTC. Local times are turned into instants with ``zoneinfo``,
so a daylight-saving change is honoured: 09:00 in New York is 13:00 UTC in summer and 14:00
UTC in winter. A local time that does not exist on a spring-forward day (02:30) is read as
the instant it would have been before the change (``fold=0``), one hour later on the wall
clock; a local time that happens twice on a fall-back day is taken the first time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from getfluxly_server.domain.automations.definition import QuietHours, Until, timezone_named

_UTC = ZoneInfo("UTC")


def zone_for(traits: Mapping[str, Any], project_zone: str | None) -> ZoneInfo:
    """The profile's zone (see module)."""
    return timezone_named(traits.get("timezone")) or timezone_named(project_zone) or _UTC


def _instant(day: datetime, at: time, zone: ZoneInfo) -> datetime:
    local = datetime(day.year, day.month, day.day, at.hour, at.minute, tzinfo=zone)
    # Round-trip through UTC: a non-existent wall time comes back as the real instant.
    return local.astimezone(UTC)


def next_time(now: datetime, until: Until, zone: ZoneInfo) -> datetime:
    """The first instant after ``now`` whose local time in ``zone`` is ``until.at`` on one of
    ``until.weekdays`` (ISO: 1 Monday ... 7 Sunday)."""
    today = now.astimezone(zone)
    for ahead in range(8):
        day = today + timedelta(days=ahead)
        if day.isoweekday() not in until.weekdays:
            continue
        moment = _instant(day, until.at, zone)
        if moment > now:
            return moment
    raise AssertionError("a weekday list that is not empty always matches within 8 days")


def quiet_until(now: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime | None:
    """When the quiet hours ``now`` falls in end (an instant), or None if ``now`` is not in
    quiet hours. ``start`` is inside, ``end`` is not; a window may span midnight."""
    local = now.astimezone(zone)
    clock = local.time().replace(second=0, microsecond=0, tzinfo=None)
    clock_exact = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock_exact < quiet.end
        end_day = local
    else:  # e.g. 21:00 to 08:00
        inside = clock_exact >= quiet.start or clock_exact < quiet.end
        end_day = local + timedelta(days=1) if clock >= quiet.start else local
    if not inside:
        return None
    return _instant(end_day, quiet.end, zone)
