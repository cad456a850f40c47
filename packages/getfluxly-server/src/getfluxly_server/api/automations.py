"""Automations (workspace key): create, list, read (with per-step stats), change, delete,
activate and pause (engine spec section 4).

The definition (``trigger``, ``steps``, ``reentry``, ``exit_on``, ``quiet_hours``,
``frequency_cap``) is checked as a whole by ``domain.automations.definition``: a fault is 400
``validation_error`` whose ``field`` is its JSON path (``steps[2].on_event[0].duration``).
Answers show the definition as it was sent.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import (
    ActionBody,
    PageCursor,
    PageLimit,
    Request,
    Response,
    Timestamp,
)
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.domain import paging
from getfluxly_server.domain.automations import manage
from getfluxly_server.domain.clock import SYSTEM
from getfluxly_server.storage.models import NAME_MAX, Automation

log = logging.getLogger("getfluxly.automations")
router = APIRouter(prefix="/v1", tags=["automations"])

Status = Literal["draft", "active", "paused"]
#: ``"once"`` | ``"always"`` | ``{"after": "P7D"}``
Reentry = str | dict[str, Any]

EXAMPLE = {
    "name": "Welcome series",
    "trigger": {"event": "signed_up"},
    "steps": [
        {"id": "welcome", "type": "send_email", "template_id": "tpl_..."},
        {"id": "wait", "type": "delay", "duration": "P2D"},
        {"id": "tips", "type": "send_email", "template_id": "tpl_..."},
    ],
    "exit_on": {"event": "unsubscribed"},
    "quiet_hours": {"start": "21:00", "end": "08:00", "action": "postpone"},
}


class NewAutomation(Request):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    trigger: dict[str, Any] = Field(
        description='{"event": "signed_up", "where": [...]} | {"segment_entered": "seg_..."} | '
        '{"segment_left": "seg_..."} | {"date_trait": "trial_ends_at", "offset": "-P3D"}'
    )
    steps: list[Any] = Field(description="The steps, each with an id unique in the automation")
    reentry: Reentry | None = Field(
        default=None, description='"once" (default), "always", {"after": "P30D"}'
    )
    exit_on: dict[str, Any] | None = Field(default=None, description='{"event", "where"?}')
    quiet_hours: dict[str, Any] | None = Field(
        default=None, description='{"start": "21:00", "end": "08:00", "action": "postpone"|"skip"}'
    )
    frequency_cap: dict[str, Any] | None = Field(
        default=None, description='{"max": 3, "per": "P1D"}'
    )


class AutomationChanges(Request):
    """Only the fields given change; null clears reentry, exit_on, quiet_hours, frequency_cap."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    trigger: dict[str, Any] | None = None
    steps: list[Any] | None = None
    reentry: Reentry | None = None
    exit_on: dict[str, Any] | None = None
    quiet_hours: dict[str, Any] | None = None
    frequency_cap: dict[str, Any] | None = None


class RunCounts(Response):
    running: int
    completed: int
    exited: int


class AutomationView(Response):
    id: str
    project_id: str
    name: str
    status: Status
    #: Grows with each change of the definition; runs stay on the version they entered.
    version: int
    trigger: dict[str, Any]
    steps: list[Any]
    reentry: Reentry
    exit_on: dict[str, Any] | None
    quiet_hours: dict[str, Any] | None
    frequency_cap: dict[str, Any] | None
    created_at: Timestamp
    updated_at: Timestamp
    activated_at: Timestamp | None


class AutomationDetail(AutomationView):
    #: Per step id: runs that ``entered`` and ``completed`` it, messages ``sent``, and other
    #: outcomes (``skipped``, ``capped``, ``postponed``, ``timed_out``, ``event``, ``failed``,
    #: ``exited``, ``then``, ``else``) when they happened.
    stats: dict[str, dict[str, int]]
    runs: RunCounts


class OneAutomation(Response):
    automation: AutomationView


class AutomationWithStats(Response):
    automation: AutomationDetail


class AutomationList(Response):
    automations: list[AutomationView]
    next_cursor: str | None


class Deleted(Response):
    deleted: bool
    id: str


def _fields(row: Automation) -> dict[str, Any]:
    body = row.definition
    return {
        "id": row.id, "project_id": row.project_id, "name": row.name, "status": row.status,
        "version": row.version, "trigger": body["trigger"], "steps": body["steps"],
        "reentry": body.get("reentry", "once"), "exit_on": body.get("exit_on"),
        "quiet_hours": body.get("quiet_hours"), "frequency_cap": body.get("frequency_cap"),
        "created_at": row.created_at, "updated_at": row.updated_at,
        "activated_at": row.activated_at,
    }  # fmt: skip


def _log(action: str, row: Automation, note: str | None) -> None:
    log.info(
        "automation %s: %s, now %s%s", row.id, action, row.status, f" ({note!r})" if note else ""
    )


def _view(row: Automation) -> AutomationView:
    return AutomationView(**_fields(row))


@router.post(
    "/projects/{project_id}/automations",
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
)
def create_automation(
    project_id: str, body: NewAutomation, who: WorkspaceKey, db: DB
) -> OneAutomation:
    """Check and save, as a ``draft`` (activate it to start runs)."""
    with db.transaction() as session:
        row = manage.create(session, who, project_id, body.model_dump())
        return OneAutomation(automation=_view(row))


@router.get("/projects/{project_id}/automations")
def list_automations(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> AutomationList:
    """The project's automations, newest first (deleted ones are left out)."""
    with db.read() as session:
        found = manage.page(session, who, project_id, limit=limit, cursor=cursor)
        return AutomationList(
            automations=[_view(a) for a in found.automations], next_cursor=found.next_cursor
        )


@router.get("/automations/{automation_id}")
def get_automation(automation_id: str, who: WorkspaceKey, db: DB) -> AutomationWithStats:
    """The automation with its per-step stats and its runs by status."""
    with db.read() as session:
        row = manage.find(session, who, automation_id)
        return AutomationWithStats(
            automation=AutomationDetail(
                **_fields(row),
                stats=manage.stats(session, row),
                runs=RunCounts(**manage.run_counts(session, row)),
            )
        )


@router.patch("/automations/{automation_id}")
def update_automation(
    automation_id: str, body: AutomationChanges, who: WorkspaceKey, db: DB
) -> OneAutomation:
    """Change the fields given; a changed definition is a new version (runs under way stay
    on theirs)."""
    with db.transaction() as session:
        row = manage.update(session, who, automation_id, body.model_dump(exclude_unset=True))
        return OneAutomation(automation=_view(row))


@router.delete("/automations/{automation_id}")
def delete_automation(automation_id: str, who: WorkspaceKey, db: DB) -> Deleted:
    """Gone from reads and lists; its runs under way end."""
    with db.transaction() as session:
        manage.delete(session, who, automation_id, SYSTEM.now())
        return Deleted(deleted=True, id=automation_id)


@router.post("/automations/{automation_id}/activate")
def activate_automation(
    automation_id: str, who: WorkspaceKey, db: DB, body: ActionBody
) -> OneAutomation:
    """Start (or resume) it: its trigger starts runs, and paused runs go on."""
    with db.transaction() as session:
        row = manage.activate(session, who, automation_id, SYSTEM.now())
        _log("activate", row, body.note)
        return OneAutomation(automation=_view(row))


@router.post(
    "/automations/{automation_id}/pause",
    responses={409: {"model": ErrorBody, "description": "conflict: a draft is not running"}},
)
def pause_automation(
    automation_id: str, who: WorkspaceKey, db: DB, body: ActionBody
) -> OneAutomation:
    """Stop starting runs; runs under way wait where they are until it is activated."""
    with db.transaction() as session:
        row = manage.pause(session, who, automation_id)
        _log("pause", row, body.note)
        return OneAutomation(automation=_view(row))
