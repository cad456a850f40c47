"""Automation definitions, durations and times of day, without a database: every fault is
``validation_error`` naming its JSON path; times of day honour the profile's zone and its
daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from getfluxly_server.domain.automations.definition import QuietHours, Until, parse
from getfluxly_server.domain.automations.durations import parse_duration
from getfluxly_server.domain.automations.schedule import next_time, quiet_until, zone_for
from getfluxly_server.domain.errors import ValidationFailed

SEND = {"id": "s", "type": "send_email", "template_id": "tpl_x"}


def _body(**changes: Any) -> dict[str, Any]:
    return {"trigger": {"event": "signed_up"}, "steps": [SEND], **changes}


def _one(**step: Any) -> dict[str, Any]:
    """A definition of one step."""
    return _body(steps=[step])


WAIT = {"id": "w", "type": "wait_for_event", "event": "e", "timeout": "P1D"}
QUIET = {"start": "21:00", "end": "08:00"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT15M", timedelta(minutes=15)),
        ("P3D", timedelta(days=3)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT2H30M", timedelta(days=1, hours=2, minutes=30)),
        ("PT0.5S", timedelta(seconds=0.5)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "d") == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "3D", "P1M", "P1Y", "P1DT", "-P1D", "PT0S", 5])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_duration(text, "steps[0].duration")
    assert refused.value.extra["field"] == "steps[0].duration"


def test_a_month_is_refused_with_a_hint_and_an_offset_may_be_negative() -> None:
    with pytest.raises(ValidationFailed, match="use days"):
        parse_duration("P1M", "x")
    assert parse_duration("-P3D", "x", signed=True) == -timedelta(days=3)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_body(steps=[{"id": "a", "type": "teleport"}]), "steps[0].type"),
        (_body(steps=[SEND, SEND]), "steps[1].id"),
        (_body(steps=[{"type": "exit"}]), "steps[0].id"),
        (_body(steps=[]), "steps"),
        (_body(trigger={"event": "x", "segment_entered": "seg_a"}), "trigger"),
        (_body(trigger={"segment_left": "nope"}), "trigger.segment_left"),
        (_body(trigger={"date_trait": "ends", "offset": "-P1M"}), "trigger.offset"),
        (
            _body(trigger={"event": "x", "where": [{"property": "p", "op": "like", "value": 1}]}),
            "trigger.where[0].op",
        ),
        (_body(steps=[{"id": "d", "type": "delay", "duration": "soon"}]), "steps[0].duration"),
        (_body(steps=[{"id": "d", "type": "delay"}]), "steps[0]"),
        (_one(id="d", type="delay", until={"time": "25:00"}), "steps[0].until.time"),
        (
            _one(id="d", type="delay", until={"time": "09:00", "weekdays": [0]}),
            "steps[0].until.weekdays[0]",
        ),
        (_one(**WAIT, on_event=[{"id": "w", "type": "exit"}]), "steps[0].on_event[0].id"),
        (_body(steps=[{"id": "w", "type": "wait_for_event", "event": "e"}]), "steps[0].timeout"),
        (
            _one(**WAIT, on_timeout=[{"id": "x", "type": "delay", "duration": "P"}]),
            "steps[0].on_timeout[0].duration",
        ),
        (_body(steps=[{"id": "b", "type": "branch", "rule": 3}]), "steps[0].rule"),
        (
            _one(id="b", type="branch", rule={"trait": "a", "op": "exists"},
                 **{"else": [{"id": "z", "type": "nope"}]}),
            "steps[0].else[0].type",
        ),
        (_body(steps=[{"id": "h", "type": "webhook", "url": "ftp://x"}]), "steps[0].url"),
        (_body(steps=[{"id": "t", "type": "update_traits", "traits": {}}]), "steps[0].traits"),
        (_body(steps=[{**SEND, "subject": "x"}]), "steps[0].subject"),
        (_body(reentry="twice"), "reentry"),
        (_body(reentry={"after": "never"}), "reentry.after"),
        (_body(quiet_hours={"start": "21:00", "end": "8am"}), "quiet_hours.end"),
        (_body(quiet_hours={**QUIET, "action": "drop"}), "quiet_hours.action"),
        (_body(frequency_cap={"max": 0, "per": "P1D"}), "frequency_cap.max"),
        (_body(frequency_cap={"max": 2, "per": "P0D"}), "frequency_cap.per"),
        (_body(exit_on={"where": []}), "exit_on.event"),
    ],
)  # fmt: skip
def test_every_fault_names_its_json_path(body: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse(body)
    assert refused.value.extra["field"] == path, refused.value.detail
    assert refused.value.detail.startswith(path)


def test_nested_steps_flow_on_to_the_step_after_their_parent() -> None:
    definition = parse(
        _body(
            steps=[
                {
                    "id": "wait", "type": "wait_for_event", "event": "e", "timeout": "P1D",
                    "on_event": [{"id": "yes", "type": "update_traits", "traits": {"a": 1}}],
                },
                {"id": "last", "type": "exit"},
            ]
        )
    )  # fmt: skip
    assert definition.next_of == {"wait": "last", "yes": "last", "last": None}
    assert definition.after((), "wait") == "last"  # no on_timeout steps: on after the wait


NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_AT_NINE = Until(time(9, 0), (1, 2, 3, 4, 5))


def test_nine_on_weekdays_across_the_spring_change() -> None:
    friday = datetime(2027, 3, 12, 15, 0, tzinfo=UTC)  # 10:00 EST
    assert next_time(friday, WEEKDAYS_AT_NINE, NEW_YORK) == datetime(2027, 3, 15, 13, 0, tzinfo=UTC)
    before = datetime(2027, 3, 5, 15, 0, tzinfo=UTC)
    assert next_time(before, WEEKDAYS_AT_NINE, NEW_YORK) == datetime(2027, 3, 8, 14, 0, tzinfo=UTC)
    # Exactly at 09:00 it is the next one, never now again.
    at_nine = datetime(2027, 3, 15, 13, 0, tzinfo=UTC)
    assert next_time(at_nine, WEEKDAYS_AT_NINE, NEW_YORK) == datetime(
        2027, 3, 16, 13, 0, tzinfo=UTC
    )


def test_a_wall_time_skipped_by_the_change_is_the_instant_after_it() -> None:
    sunday_early = datetime(2027, 3, 14, 5, 0, tzinfo=UTC)  # 00:00 EST
    half_past_two = Until(time(2, 30), (7,))
    moment = next_time(sunday_early, half_past_two, NEW_YORK)
    assert moment == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_quiet_hours_across_midnight_and_zones() -> None:
    quiet = QuietHours(time(21, 0), time(8, 0), "postpone")
    paris = ZoneInfo("Europe/Paris")
    evening = datetime(2027, 1, 4, 21, 30, tzinfo=UTC)  # 22:30 in Paris
    assert quiet_until(evening, quiet, paris) == datetime(2027, 1, 5, 7, 0, tzinfo=UTC)
    early = datetime(2027, 1, 5, 5, 0, tzinfo=UTC)  # 06:00
    assert quiet_until(early, quiet, paris) == datetime(2027, 1, 5, 7, 0, tzinfo=UTC)
    assert quiet_until(datetime(2027, 1, 5, 7, 0, tzinfo=UTC), quiet, paris) is None
    daytime = QuietHours(time(12, 0), time(14, 0), "skip")
    assert quiet_until(datetime(2027, 1, 5, 12, 30, tzinfo=UTC), daytime, ZoneInfo("UTC")) == (
        datetime(2027, 1, 5, 14, 0, tzinfo=UTC)
    )


def test_the_zone_is_the_profiles_else_the_projects_else_utc() -> None:
    assert zone_for({"timezone": "Asia/Tokyo"}, "Europe/Paris") == ZoneInfo("Asia/Tokyo")
    assert zone_for({"timezone": "../../etc/passwd"}, "Europe/Paris") == ZoneInfo("Europe/Paris")
    assert zone_for({}, None) == ZoneInfo("UTC")
