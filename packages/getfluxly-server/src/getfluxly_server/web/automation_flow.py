"""An automation's steps as a flow of boxes for its page: the trigger, then each step with
what it does in words and its per-step counts (``manage.stats``), the branches of a
``wait_for_event`` (on the event / on the timeout) and of a ``branch`` (then / else) drawn
side by side under their step.

It reads the stored definition, which was checked when it was saved
(``domain.automations.definition``), as the JSON it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The counts every step shows, first and in this order; other outcomes follow when seen.
BASE_COUNTS = ("entered", "completed", "sent")
WEEKDAYS = {1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 7: "Sun"}


@dataclass(frozen=True)
class Branch:
    label: str
    boxes: list[Box]


@dataclass(frozen=True)
class Box:
    """One step of the flow (or the trigger, ``type`` ``trigger``)."""

    id: str
    type: str
    summary: str
    counts: list[tuple[str, int]] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)


def _counts(stats: Mapping[str, int]) -> list[tuple[str, int]]:
    shown = [(name, stats.get(name, 0)) for name in BASE_COUNTS]
    shown += sorted((k, v) for k, v in stats.items() if k not in BASE_COUNTS and v)
    return shown


def _where(where: Any) -> str:
    if not isinstance(where, list) or not where:
        return ""
    parts = [
        f"{w.get('property')} {w.get('op', 'eq')}"
        + ("" if w.get("op") in ("exists", "not_exists") else f" {json.dumps(w.get('value'))}")
        for w in where
        if isinstance(w, dict)
    ]
    return " where " + " and ".join(parts)


def trigger_text(trigger: Mapping[str, Any], segments: Mapping[str, str]) -> str:
    """The trigger in words (``segments``: names by id)."""
    if "event" in trigger:
        return f"When the event “{trigger['event']}” is tracked{_where(trigger.get('where'))}"
    for key, verb in (("segment_entered", "enters"), ("segment_left", "leaves")):
        if key in trigger:
            segment_id = str(trigger[key])
            return f"When a profile {verb} the segment {segments.get(segment_id, segment_id)}"
    if "date_trait" in trigger:
        offset = trigger.get("offset")
        at = f"{offset} from" if offset else "On"
        return f"{at} the date in the trait “{trigger['date_trait']}”"
    return json.dumps(trigger)


def _summary(step: Mapping[str, Any], templates: Mapping[str, str]) -> str:
    kind = step.get("type")
    if kind == "send_email":
        template_id = str(step.get("template_id"))
        via = f" via provider {step['provider_id']}" if step.get("provider_id") else ""
        return f"Send the template {templates.get(template_id, template_id)}{via}"
    if kind == "delay":
        if "duration" in step:
            return f"Wait {step['duration']}"
        until = step.get("until") or {}
        days = ", ".join(WEEKDAYS.get(d, str(d)) for d in until.get("weekdays", []) or [])
        return f"Wait until {until.get('time')}" + (f" on {days}" if days else "")
    if kind == "wait_for_event":
        return (
            f"Wait up to {step.get('timeout')} for the event “{step.get('event')}”"
            f"{_where(step.get('where'))}"
        )
    if kind == "branch":
        return f"If the profile matches {json.dumps(step.get('rule'), ensure_ascii=False)}"
    if kind == "update_traits":
        traits = step.get("traits") or {}
        return "Set the traits " + ", ".join(sorted(str(k) for k in traits))
    if kind == "webhook":
        return f"Call the webhook {step.get('url')}"
    if kind == "exit":
        return "Exit the automation"
    return str(kind)


def boxes(
    steps: Any,
    stats: Mapping[str, Mapping[str, int]],
    templates: Mapping[str, str],
) -> list[Box]:
    """The steps (a list of step objects) as boxes, nested branches included."""
    drawn: list[Box] = []
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        step_id = str(step.get("id"))
        branches: list[Branch] = []
        if step.get("type") == "wait_for_event":
            branches = [
                Branch(f"On “{step.get('event')}”", boxes(step.get("on_event"), stats, templates)),
                Branch(
                    f"On timeout ({step.get('timeout')})",
                    boxes(step.get("on_timeout"), stats, templates),
                ),
            ]
        elif step.get("type") == "branch":
            branches = [
                Branch("Then", boxes(step.get("then"), stats, templates)),
                Branch("Else", boxes(step.get("else"), stats, templates)),
            ]
        drawn.append(
            Box(step_id, str(step.get("type")), _summary(step, templates),
                _counts(stats.get(step_id, {})), branches)
        )  # fmt: skip
    return drawn


def step_ids(drawn: list[Box]) -> set[str]:
    """Every step id of the boxes, nested ones included."""
    found: set[str] = set()
    for box in drawn:
        found.add(box.id)
        for branch in box.branches:
            found |= step_ids(branch.boxes)
    return found


def earlier_steps(
    drawn: list[Box], stats: Mapping[str, Mapping[str, int]]
) -> list[tuple[str, list[tuple[str, int]]]]:
    """Counts of steps that are not in the current version (runs on an older one saw them)."""
    current = step_ids(drawn)
    return [
        (sid, _counts(outcomes)) for sid, outcomes in sorted(stats.items()) if sid not in current
    ]


def settings_text(definition: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The definition's other fields in words: (label, what it says)."""
    reentry = definition.get("reentry", "once")
    if isinstance(reentry, dict):
        reentry = f"again {reentry.get('after')} after the last run began"
    shown = [("Re-entry", str(reentry))]
    exit_on = definition.get("exit_on")
    if isinstance(exit_on, dict):
        shown.append(
            ("Exit on", f"the event “{exit_on.get('event')}”{_where(exit_on.get('where'))}")
        )
    quiet = definition.get("quiet_hours")
    if isinstance(quiet, dict):
        shown.append(("Quiet hours", f"{quiet.get('start')}–{quiet.get('end')}, then "
                      f"{quiet.get('action', 'postpone')} (the profile's time zone)"))  # fmt: skip
    cap = definition.get("frequency_cap")
    if isinstance(cap, dict):
        shown.append(("Frequency cap", f"at most {cap.get('max')} per {cap.get('per')}"))
    return shown
