"""A project's subscription groups (workspace key): what the preference page lists and
what a marketing message names as its ``subscription_group``.

``PUT`` sets the whole list at once, in the order the page shows it; a group left out is
gone from the page (choices recipients made for it are kept, should it come back). Names
are 1-64 of ``a-z 0-9 - _``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import Request, Response
from getfluxly_server.domain.tracking import preferences as domain
from getfluxly_server.storage.models import NAME_MAX, SubscriptionGroup

router = APIRouter(prefix="/v1/projects/{project_id}/subscription-groups", tags=["unsubscribe"])


class Group(Request):
    #: What messages name (``subscription_group``): a-z 0-9 - _, up to 64.
    name: str = Field(min_length=1, max_length=64)
    #: What the preference page shows.
    label: str = Field(min_length=1, max_length=NAME_MAX)
    description: str | None = Field(default=None, max_length=1000)


class GroupList(Request):
    subscription_groups: list[Group] = Field(max_length=domain.MAX_GROUPS)


class GroupView(Response):
    name: str
    label: str
    description: str | None


class Groups(Response):
    subscription_groups: list[GroupView]


def _view(rows: Sequence[SubscriptionGroup]) -> Groups:
    return Groups(
        subscription_groups=[GroupView(name=g.name, label=g.label, description=g.description)
                             for g in rows]
    )  # fmt: skip


@router.get("")
def list_groups(project_id: str, who: WorkspaceKey, db: DB) -> Groups:
    """The project's groups, in page order."""
    with db.read() as session:
        return _view(domain.groups(session, who, project_id))


@router.put("")
def set_groups(project_id: str, body: GroupList, who: WorkspaceKey, db: DB) -> Groups:
    """Set the project's groups (the whole list, in page order)."""
    wanted = [
        domain.GroupDefinition(g.name, g.label, g.description) for g in body.subscription_groups
    ]
    with db.transaction() as session:
        return _view(domain.set_groups(session, who, project_id, wanted))
