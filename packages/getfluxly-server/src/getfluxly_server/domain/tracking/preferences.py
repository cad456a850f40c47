"""Subscription groups and the preference page (engine spec section 6).

Groups are defined per project, as one ordered list (``PUT /v1/projects/{project_id}/
subscription-groups``): a name (what a message names as its ``subscription_group``: the
API's ``subscription_group`` field, or an automation step's or broadcast's through
``domain.messages.Source``), a label and a description (what the page shows). A recipient's
choice per group is a ``subscriptions`` row (no row: subscribed); leaving all marketing
mail is a suppression with reason ``unsubscribed`` (recorded through feedback).

What a message's links do:

- one-click (``POST`` to the ``List-Unsubscribe`` URL): a message of a group unsubscribes
  its recipient from that group, any other marketing message from all marketing mail;
- the page: one checkbox per group and "unsubscribe from everything"; saving records a row
  per group shown, an unsubscribe event per group left, and the whole unsubscribe (or, for
  an address that only ever unsubscribed, its return: a bounce or a complaint stays).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.segments import addresses as segment_addresses
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.domain.tracking import engagement
from getfluxly_server.domain.tracking.machines import Hit
from getfluxly_server.storage import outbox
from getfluxly_server.storage import preferences as store
from getfluxly_server.storage import suppressions as suppression_store
from getfluxly_server.storage.models import Message, SubscriptionGroup, SuppressionReason

#: A group's name: lower-case letters, digits, ``-`` and ``_`` (it travels in API bodies).
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_GROUPS = 50


@dataclass(frozen=True)
class GroupDefinition:
    name: str
    label: str
    description: str | None = None


@dataclass(frozen=True)
class GroupChoice:
    name: str
    label: str
    description: str | None
    subscribed: bool


@dataclass(frozen=True)
class PreferencePage:
    """What the page shows: whose choices, in which project, for which message."""

    message_id: str
    project_name: str
    email: str
    groups: Sequence[GroupChoice]
    #: Unsubscribed from all marketing mail (a suppression with reason ``unsubscribed``).
    unsubscribed_all: bool
    #: Suppressed for a bounce or a complaint: nothing is sent whatever the choices.
    blocked: bool


def groups(session: Session, principal: Principal, project_id: str) -> Sequence[SubscriptionGroup]:
    project_of(session, principal, project_id)
    return store.groups(session, project_id)


def set_groups(
    session: Session, principal: Principal, project_id: str, wanted: Sequence[GroupDefinition]
) -> Sequence[SubscriptionGroup]:
    """Make the project's groups exactly ``wanted``, in order (choices made for a group
    that is dropped are kept, should it come back)."""
    project_of(session, principal, project_id)
    if len(wanted) > MAX_GROUPS:
        raise ValidationFailed(
            f"subscription_groups: at most {MAX_GROUPS} groups", field="subscription_groups"
        )
    seen: set[str] = set()
    for index, group in enumerate(wanted):
        where = f"subscription_groups[{index}]"
        if not NAME.fullmatch(group.name):
            raise ValidationFailed(
                f"{where}.name must be 1-64 of a-z 0-9 - _, beginning with a letter or digit",
                field="subscription_groups",
            )
        if group.name in seen:
            raise ValidationFailed(
                f"{where}.name: {group.name!r} is listed twice", field="subscription_groups"
            )
        if not group.label.strip():
            raise ValidationFailed(f"{where}.label may not be empty", field="subscription_groups")
        seen.add(group.name)
    store.replace_groups(
        session, project_id, [(g.name, g.label.strip(), g.description) for g in wanted]
    )
    return store.groups(session, project_id)


def _message(session: Session, message_id: str) -> Message:
    message = engagement.live_message(session, message_id)
    if message is None:
        raise NotFound("message (it was deleted, or its recipient erased)")
    return message


def page(session: Session, message_id: str) -> PreferencePage:
    """The page of the message's recipient."""
    message = _message(session, message_id)
    project = outbox.projects(session, {message.project_id}).get(message.project_id)
    chosen = store.choices(session, message.project_id, message.to_email)
    entry = suppression_store.get(session, message.project_id, message.to_email)
    unsubscribed = entry is not None and entry.reason == SuppressionReason.UNSUBSCRIBED.value
    return PreferencePage(
        message_id=message.id,
        project_name=project.name if project is not None else "",
        email=message.to_email,
        groups=[
            GroupChoice(g.name, g.label, g.description, chosen.get(g.name, True))
            for g in store.groups(session, message.project_id)
        ],
        unsubscribed_all=unsubscribed,
        blocked=entry is not None and not unsubscribed,
    )


def one_click(session: Session, message_id: str, hit: Hit) -> None:
    """RFC 8058 one-click: the message's group, else all marketing mail (see the module
    docstring). Repeating it changes nothing more."""
    message = _message(session, message_id)
    group = message.subscription_group
    if group is not None:
        if store.choices(session, message.project_id, message.to_email).get(group, True):
            store.set_choices(session, message.project_id, message.to_email, {group: False},
                              message.id)  # fmt: skip
            engagement.unsubscribed(session, message, hit, group=group, reason="one-click")
        return
    engagement.unsubscribed(session, message, hit, group=None, reason="one-click")


def save(
    session: Session,
    message_id: str,
    subscribed: Collection[str],
    *,
    unsubscribe_all: bool,
    hit: Hit,
) -> PreferencePage:
    """The page's form: ``subscribed`` are the groups left ticked (others shown are left);
    ``unsubscribe_all`` leaves all marketing mail, or (False) comes back to it if the
    address only ever unsubscribed."""
    message = _message(session, message_id)
    project_id, email = message.project_id, message.to_email
    before = store.choices(session, project_id, email)
    wanted = {g.name: g.name in subscribed for g in store.groups(session, project_id)}
    store.set_choices(session, project_id, email, wanted, message.id)
    if any(stays and not before.get(name, True) for name, stays in wanted.items()):
        segment_addresses.changed(session, project_id, [email])  # a group ticked again
    for name, stays in wanted.items():
        if not stays and before.get(name, True):
            engagement.unsubscribed(session, message, hit, group=name, reason="preference page")
    entry = suppression_store.get(session, project_id, email)
    if unsubscribe_all and entry is None:
        engagement.unsubscribed(session, message, hit, group=None, reason="preference page")
    elif (
        not unsubscribe_all
        and entry is not None
        and entry.reason == SuppressionReason.UNSUBSCRIBED.value  # never a bounce's
    ):
        suppression_store.remove(session, project_id, email)
        segment_addresses.changed(session, project_id, [email])  # back on the list
    return page(session, message_id)
