"""Recording messages: the one way every sender (the API, automations, broadcasts) puts a
message in the ledger.

A recorded message is ``queued`` and due now (or ``suppressed``, never to be attempted, when
its address is on the project's suppression list), has its first history entry, its
provider (the one named, else the project's default, else its first) and either a template
(checked to exist, live, in the project) or inline Liquid content (checked to parse). Nothing
is rendered here: a delivery worker renders when it sends.

Idempotency: a message carries a key unique in its project. Derived keys
(:func:`automation_key`, :func:`broadcast_key`) make an origin that runs twice record one
message; the API stores its caller's ``Idempotency-Key`` as given (keys beginning with a
derived key's prefix are refused there, so a caller's key never takes an automation's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.messages.addresses import canonical_address
from getfluxly_server.domain.messages.errors import NoProvider
from getfluxly_server.domain.messages.recipients import Recipient, resolve
from getfluxly_server.domain.suppressions import suppressed_detail
from getfluxly_server.domain.templates import TemplateFields, prepare
from getfluxly_server.storage import messages as store
from getfluxly_server.storage import preferences, suppressions
from getfluxly_server.storage import templates as template_store
from getfluxly_server.storage.models import (
    Message,
    MessageHistory,
    MessagePriority,
    MessageStatus,
    new_id,
    now,
)

Origin = Literal["api", "automation", "broadcast"]
#: Claim order by origin: a transactional call first, then automations, then broadcasts.
_PRIORITY: Mapping[Origin, MessagePriority] = {
    "api": MessagePriority.TRANSACTIONAL,
    "automation": MessagePriority.AUTOMATION,
    "broadcast": MessagePriority.BROADCAST,
}
#: Prefixes of derived keys: refused in a caller's Idempotency-Key.
DERIVED_PREFIXES = ("automation:", "broadcast:")


def automation_key(automation_id: str, step_id: str, profile_id: str, run_id: str) -> str:
    """The key of the message an automation's send step sends a profile in one run."""
    return f"automation:{automation_id}:{step_id}:{profile_id}:{run_id}"


def broadcast_key(broadcast_id: str, profile_id: str) -> str:
    """The key of a broadcast's message to a profile (each member gets exactly one)."""
    return f"broadcast:{broadcast_id}:{profile_id}"


@dataclass(frozen=True)
class Content:
    """What the message says: a template of the project, or inline Liquid (``subject`` and
    at least one of ``html``, ``text``); never both."""

    template_id: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Source:
    """Where messages come from, and what they share: how they are sent and tagged."""

    origin: Origin = "api"
    automation_id: str | None = None
    step_id: str | None = None
    broadcast_id: str | None = None
    provider_id: str | None = None
    transactional: bool = True
    tags: Mapping[str, Any] = field(default_factory=dict)
    #: Track opens and clicks (the pixel, rewritten links); False opts these messages out
    #: (an automation step's or a call's choice).
    tracking: bool = True
    #: The project's subscription group these (marketing) messages belong to: a recipient
    #: unsubscribed from it is not sent them. Checked to exist when recorded.
    subscription_group: str | None = None


@dataclass(frozen=True)
class NewMessage:
    """One message to record (:func:`enqueue`)."""

    recipient: Recipient
    content: Content
    source: Source = Source()
    data: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Enqueued:
    """The message recorded, or the one already recorded under the same key (``created``
    False: nothing new was recorded). ``history``: the new message's one entry (None for an
    earlier message: read it with ``ledger.history`` if needed)."""

    message: Message
    created: bool
    history: Sequence[MessageHistory] | None = None


@dataclass(frozen=True)
class BulkRecipient:
    """One recipient of :func:`enqueue_many`, already resolved: the address, its profile,
    the message's key (e.g. :func:`broadcast_key`) and its own ``data``."""

    email: str
    idempotency_key: str
    profile_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BulkResult:
    """What :func:`enqueue_many` did: the ids recorded (``queued`` and ``suppressed``), how
    many keys were already taken (``duplicates``), and the recipients whose address was not
    one (``invalid``, by index in the input)."""

    created: list[str]
    suppressed: int
    duplicates: int
    invalid: list[int]


@dataclass(frozen=True)
class _Prepared:
    """Content and provider, checked once for any number of recipients."""

    provider_id: str
    template_id: str | None
    template_version: int | None
    subject: str | None
    html: str | None
    text: str | None


def check_content(
    session: Session, project_id: str, content: Content
) -> tuple[Content, int | None]:
    """``content`` checked, and the template's version: a live template of the project, or
    inline Liquid that parses (``validation_error`` naming the field and line otherwise)."""
    inline = (content.subject, content.html, content.text)
    if content.template_id is not None:
        if any(part is not None for part in inline):
            raise ValidationFailed(
                "give template_id, or subject with html and/or text; not both",
                field="template_id",
            )
        version = template_store.live_version(session, project_id, content.template_id)
        if version is None:
            raise ValidationFailed(
                "template_id: no such template in this project (or it was deleted)",
                field="template_id",
            )
        return content, version
    if content.subject is None:
        raise ValidationFailed(
            "give template_id, or subject with html and/or text", field="subject"
        )
    fields = TemplateFields(subject=content.subject, html=content.html, text=content.text)
    prepared = prepare(fields)
    return Content(subject=prepared.subject, html=prepared.html, text=prepared.text), None


def resolve_provider(session: Session, project_id: str, provider_id: str | None) -> str:
    """The provider the message goes through: ``provider_id`` (one of the project's), else
    the project's default, else its first provider; ``no_provider`` when it has none."""
    if provider_id is not None:
        if store.provider_in_project(session, project_id, provider_id) is None:
            raise ValidationFailed(
                "provider_id: no such email provider in this project", field="provider_id"
            )
        return provider_id
    found = store.default_provider(session, project_id)
    if found is None:
        raise NoProvider(project_id)
    return found


def check_group(session: Session, project_id: str, source: Source) -> None:
    """A ``subscription_group`` must be one of the project's groups, on marketing mail."""
    group = source.subscription_group
    if group is None:
        return
    if source.transactional:
        raise ValidationFailed(
            "subscription_group is for marketing messages: set transactional to false",
            field="subscription_group",
        )
    if not preferences.group_exists(session, project_id, group):
        raise ValidationFailed(
            f"subscription_group: the project has no group {group!r} (define it with PUT "
            "/v1/projects/{project_id}/subscription-groups)",
            field="subscription_group",
        )


def _prepare(session: Session, project_id: str, content: Content, source: Source) -> _Prepared:
    check_group(session, project_id, source)
    checked, version = check_content(session, project_id, content)
    return _Prepared(
        provider_id=resolve_provider(session, project_id, source.provider_id),
        template_id=checked.template_id,
        template_version=version,
        subject=checked.subject,
        html=checked.html,
        text=checked.text,
    )


def _row(
    project_id: str,
    prepared: _Prepared,
    source: Source,
    *,
    message_id: str,
    email: str,
    profile_id: str | None,
    data: Mapping[str, Any],
    key: str | None,
    suppressed: bool,
    when: datetime,
) -> dict[str, Any]:
    """A ``messages`` row (by column name; every row has the same columns)."""
    status = MessageStatus.SUPPRESSED if suppressed else MessageStatus.QUEUED
    return {
        "id": message_id, "project_id": project_id, "status": status.value,
        "to_email": email, "profile_id": profile_id, "provider_id": prepared.provider_id,
        "template_id": prepared.template_id, "template_version": prepared.template_version,
        "transactional": source.transactional, "subject": prepared.subject,
        "html": prepared.html, "text": prepared.text, "data": dict(data),
        "tags": dict(source.tags), "origin": source.origin,
        "priority": _PRIORITY[source.origin].value,
        "automation_id": source.automation_id, "step_id": source.step_id,
        "broadcast_id": source.broadcast_id, "idempotency_key": key, "attempts": 0,
        "due_at": None if suppressed else when, "created_at": when, "updated_at": when,
        "tracking": source.tracking, "subscription_group": source.subscription_group,
    }  # fmt: skip


def _first_entry(reason: str | None) -> tuple[str, str | None]:
    """The first history entry: ``suppressed`` naming the suppression's ``reason``, or
    ``queued``."""
    if reason is not None:
        return MessageStatus.SUPPRESSED.value, suppressed_detail(reason)
    return MessageStatus.QUEUED.value, None


#: What :func:`enqueue` found for a content and provider, kept by a caller that records many
#: messages in one transaction (``transactional.send_all``): keyed by project, content,
#: provider asked for, subscription group and whether the mail is transactional (what
#: :func:`check_group` checks).
PreparedCache = dict[tuple[str, "Content", str | None, str | None, bool], "_Prepared"]


def enqueue(
    session: Session,
    project_id: str,
    new: NewMessage,
    *,
    message_id: str | None = None,
    cache: PreparedCache | None = None,
) -> Enqueued:
    """Record one message in the caller's transaction (see the module docstring).

    A key already recorded answers that message (``created`` False) before anything else
    is checked: an origin that runs again gets the same message, whatever changed since.
    ``message_id``: the id to give it (default: a new ``msg_`` id). ``cache``: content and
    provider checks already made in this transaction (filled as they are made).

    Raises ``validation_error`` (the field named), ``no_provider``, ``profile_erased``.
    """
    key = new.idempotency_key
    if key is not None and (earlier := store.by_keys(session, project_id, [key])):
        return Enqueued(earlier[0], created=False)
    to = resolve(session, project_id, new.recipient)
    if cache is None:
        prepared = _prepare(session, project_id, new.content, new.source)
    else:
        # (The subscription group is checked in _prepare: it is part of what was seen.)
        source = new.source
        seen = (project_id, new.content, source.provider_id, source.subscription_group,
                source.transactional)  # fmt: skip
        prepared = cache.get(seen) or cache.setdefault(
            seen, _prepare(session, project_id, new.content, new.source)
        )
    reason = suppressions.reasons(
        session, project_id, [to.email], transactional=new.source.transactional
    ).get(to.email)
    message_id = message_id or new_id("msg")
    row = _row(
        project_id, prepared, new.source, message_id=message_id, email=to.email,
        profile_id=to.profile_id, data=new.data, key=key, suppressed=reason is not None,
        when=now(),
    )  # fmt: skip
    first = _first_entry(reason)
    inserted = store.insert_many(session, [row], {message_id: first})
    if not inserted:  # the key was taken meanwhile (a concurrent call with the same key)
        assert key is not None, "only a key can conflict"
        return Enqueued(store.by_keys(session, project_id, [key])[0], created=False)
    # What was just inserted, as objects (not read back: the row is all there is to it).
    entry = MessageHistory(message_id=message_id, status=first[0], at=row["created_at"],
                           detail=first[1])  # fmt: skip
    return Enqueued(store.as_message(row), created=True, history=[entry])


def enqueue_many(
    session: Session,
    project_id: str,
    recipients: Sequence[BulkRecipient],
    content: Content,
    source: Source,
) -> BulkResult:
    """Record one message per recipient in the caller's transaction, set-based: content
    and provider checked once, suppressions looked up in one query, the rows inserted in
    multi-row statements that skip keys already recorded (a resumed broadcast records only
    the members it had not reached). Every message shares one ``created_at``.

    Recipients with an address that is not one are left out and listed in
    :attr:`BulkResult.invalid`; a key given twice in ``recipients`` counts once.
    Raises ``validation_error`` (content, provider) and ``no_provider``, before anything
    is written.
    """
    prepared = _prepare(session, project_id, content, source)
    valid: list[tuple[BulkRecipient, str]] = []
    invalid: list[int] = []
    seen: set[str] = set()
    repeats = 0
    for index, recipient in enumerate(recipients):
        try:
            email = canonical_address(recipient.email)
        except ValidationFailed:
            invalid.append(index)
            continue
        if recipient.idempotency_key in seen:
            repeats += 1
            continue
        seen.add(recipient.idempotency_key)
        valid.append((recipient, email))
    blocked = suppressions.reasons(
        session, project_id, {email for _, email in valid}, transactional=source.transactional
    )
    when = now()
    rows, history = [], {}
    for recipient, email in valid:
        message_id = new_id("msg")
        reason = blocked.get(email)
        rows.append(
            _row(
                project_id,
                prepared,
                source,
                message_id=message_id,
                email=email,
                profile_id=recipient.profile_id,
                data=recipient.data,
                key=recipient.idempotency_key,
                suppressed=reason is not None,
                when=when,
            )
        )
        history[message_id] = _first_entry(reason)
    created = store.insert_many(session, rows, history)
    return BulkResult(
        created=created,
        suppressed=sum(1 for i in created if history[i][0] == MessageStatus.SUPPRESSED.value),
        duplicates=repeats + len(rows) - len(created),
        invalid=invalid,
    )
