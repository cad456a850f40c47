"""Saved automations: create, list, read, change, delete, activate and pause (engine spec
section 4), with per-step stats.

Rules:

* Every definition saved is parsed (:func:`.definition.parse`) and its references checked
  (:func:`check_references`): an invalid one is refused with ``validation_error`` and the
  JSON path of the fault, so no invalid definition is ever stored; activation checks the
  references again (a template deleted since makes it refuse).
* ``draft`` → ``active`` (:func:`activate`) ↔ ``paused`` (:func:`pause`). Triggers start
  runs only while active; a paused automation's runs wait where they are and go on when it
  is activated again (a delay that ended meanwhile ends at once).
* A change of the definition adds one to ``version`` and keeps the new version: runs under
  way stay on the version they entered, new runs take the new one. A name change alone
  keeps the version.
* A deleted automation leaves reads and lists, and its runs under way end (``deleted``);
  its row stays for the messages that name it.
* Another tenant's automation is ``not_found``, as an id that does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.domain import paging
from getfluxly_server.domain.automations import engine, rules
from getfluxly_server.domain.automations.definition import (
    FIELDS,
    Definition,
    SegmentTrigger,
    parse,
    walk,
)
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.tenancy import Principal, display_name, project_of, sees
from getfluxly_server.storage import automations as store
from getfluxly_server.storage import messages as message_store
from getfluxly_server.storage import templates as template_store
from getfluxly_server.storage.models import (
    Automation,
    AutomationRun,
    Segment,
    new_id,
    now,
)

STATUSES = ("draft", "active", "paused")


@dataclass(frozen=True)
class AutomationPage:
    automations: Sequence[Automation]
    next_cursor: str | None


def definition_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The definition's fields of a request (absent optional fields left out)."""
    return {key: body[key] for key in FIELDS if body.get(key) is not None}


def check_references(session: Session, project_id: str, definition: Definition) -> None:
    """Templates, providers and segments the definition names exist in the project (live),
    and so do the automations and broadcasts its branch rules name; ``validation_error`` with
    the JSON path of the first that does not."""
    paths = _step_paths(definition)
    trigger = definition.trigger
    if isinstance(trigger, SegmentTrigger):
        kind = "segment_entered" if trigger.kind == "entered" else "segment_left"
        _segment(session, project_id, trigger.segment_id, f"trigger.{kind}")
    for step in walk(definition.steps):
        path = paths[step.id]
        if step.type == "branch":
            rules.check_references(session, project_id, step.rule, f"{path}.rule")
        if step.type != "send_email":
            continue
        template = template_store.get(session, step.template_id or "")
        if template is None or template.project_id != project_id or template.deleted_at:
            raise ValidationFailed(
                f"{path}.template_id: no such template in this project (or it was deleted)",
                field=f"{path}.template_id",
            )
        if step.provider_id is not None and (
            message_store.provider_in_project(session, project_id, step.provider_id) is None
        ):
            raise ValidationFailed(
                f"{path}.provider_id: no such email provider in this project",
                field=f"{path}.provider_id",
            )


def _segment(session: Session, project_id: str, segment_id: str, path: str) -> None:
    found = session.scalar(
        select(Segment.id).where(
            Segment.id == segment_id, Segment.project_id == project_id, Segment.deleted_at.is_(None)
        )
    )
    if found is None:
        raise ValidationFailed(
            f"{path}: no such segment in this project (or it was deleted)", field=path
        )


def _step_paths(definition: Definition) -> dict[str, str]:
    paths: dict[str, str] = {}

    def visit(steps: Sequence[Any], prefix: str) -> None:
        for index, step in enumerate(steps):
            here = f"{prefix}[{index}]"
            paths[step.id] = here
            visit(step.on_event, f"{here}.on_event")
            visit(step.on_timeout, f"{here}.on_timeout")
            visit(step.then, f"{here}.then")
            visit(step.otherwise, f"{here}.else")

    visit(definition.steps, "steps")
    return paths


def _checked(session: Session, project_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    raw = definition_body(body)
    definition = parse(raw)
    check_references(session, project_id, definition)
    return raw


def create(
    session: Session, principal: Principal, project_id: str, body: Mapping[str, Any]
) -> Automation:
    """A new automation (``draft``, version 1) of the project."""
    project_of(session, principal, project_id)
    name = display_name(body.get("name"))
    raw = _checked(session, project_id, body)
    stamp = now()
    row = Automation(
        id=new_id("aut"), project_id=project_id, name=name, status="draft", version=1,
        definition=raw, created_at=stamp, updated_at=stamp,
    )  # fmt: skip
    session.add(row)
    session.flush()
    store.save_version(session, row.id, 1, raw)
    return row


def find(
    session: Session, principal: Principal, automation_id: str, *, lock: bool = False
) -> Automation:
    row = store.get(session, automation_id, lock=lock)
    if row is None or row.deleted_at is not None or not sees(session, principal, row.project_id):
        raise NotFound("automation")
    return row


def page(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> AutomationPage:
    project_of(session, principal, project_id)
    rows, next_cursor = paging.newest_first(
        lambda before, n: store.live_page(session, project_id, limit=n, before=before),
        limit,
        cursor,
    )
    return AutomationPage(automations=rows, next_cursor=next_cursor)


def update(
    session: Session, principal: Principal, automation_id: str, changes: Mapping[str, Any]
) -> Automation:
    """Change the name and/or definition fields given (``null`` clears an optional field:
    reentry, exit_on, quiet_hours, frequency_cap); see the module for versions."""
    row = find(session, principal, automation_id, lock=True)
    if "name" in changes:
        row.name = display_name(changes["name"])
    touched = [key for key in FIELDS if key in changes]
    if touched:
        for required in ("trigger", "steps"):
            if required in changes and changes[required] is None:
                raise ValidationFailed(f"{required} cannot be null", field=required)
        merged = {**row.definition, **{key: changes[key] for key in touched}}
        raw = _checked(session, row.project_id, merged)
        if raw != row.definition:
            row.definition = raw
            row.version += 1
            store.save_version(session, row.id, row.version, raw)
            if row.status == "active":
                _start_segment_cursor(session, row)
    row.updated_at = now()
    session.flush()
    return row


def delete(session: Session, principal: Principal, automation_id: str, at: datetime) -> Automation:
    row = find(session, principal, automation_id, lock=True)
    row.deleted_at = now()
    runs = session.scalars(
        select(AutomationRun)
        .where(AutomationRun.automation_id == row.id, AutomationRun.status == store.RUNNING)
        .with_for_update()
    ).all()
    engine.exit_runs(session, runs, "deleted", at)
    session.flush()
    return row


def activate(
    session: Session, principal: Principal, automation_id: str, at: datetime
) -> Automation:
    """``active``: its trigger starts runs from now on (its definition checked again)."""
    row = find(session, principal, automation_id, lock=True)
    if row.status == "active":
        return row
    definition = parse(row.definition)
    check_references(session, row.project_id, definition)
    store.save_version(session, row.id, row.version, row.definition)
    _start_segment_cursor(session, row, definition)
    row.status = "active"
    row.activated_at = at
    row.updated_at = now()
    session.flush()
    engine.wake_runners(session)
    return row


def _start_segment_cursor(
    session: Session, row: Automation, definition: Definition | None = None
) -> None:
    """A segment trigger reads transitions from now on: if no active automation of the
    project read them until now, the project's cursor moves to the last one."""
    definition = definition or parse(row.definition)
    if not isinstance(definition.trigger, SegmentTrigger):
        return
    others = [
        a for a in store.active(session, row.project_id)
        if a.id != row.id and isinstance(parse(a.definition).trigger, SegmentTrigger)
    ]  # fmt: skip
    if not others:
        cursor = store.cursor(session, row.project_id, "segments")
        cursor.position = store.last_transition(session, row.project_id)


def pause(session: Session, principal: Principal, automation_id: str) -> Automation:
    """``paused``: no new runs; runs under way wait where they are."""
    row = find(session, principal, automation_id, lock=True)
    if row.status == "draft":
        raise DomainError("conflict", "a draft automation is not running: activate it first")
    row.status = "paused"
    row.updated_at = now()
    session.flush()
    return row


def stats(session: Session, row: Automation) -> dict[str, dict[str, int]]:
    """Per step id of the current version (and any step of an older one that saw runs):
    ``entered``, ``completed``, ``sent`` and the other outcomes, zero when none."""
    found = store.stats(session, row.id)
    definition = parse(row.definition)
    base = ("entered", "completed", "sent")
    answer: dict[str, dict[str, int]] = {}
    for step in walk(definition.steps):
        answer[step.id] = dict.fromkeys(base, 0)
    for step_id, outcomes in found.items():
        answer.setdefault(step_id, dict.fromkeys(base, 0)).update(outcomes)
    return answer


def run_counts(session: Session, row: Automation) -> dict[str, int]:
    """Runs by status (``running``, ``completed``, ``exited``)."""
    from sqlalchemy import func

    query = (
        select(AutomationRun.status, func.count())
        .where(AutomationRun.automation_id == row.id)
        .group_by(AutomationRun.status)
    )
    counts = {"running": 0, "completed": 0, "exited": 0}
    counts.update({status: int(n) for status, n in session.execute(query)})
    return counts
