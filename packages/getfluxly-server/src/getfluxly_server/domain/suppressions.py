"""The suppression list: addresses of a project that no message may be sent to (engine spec
section 6). A message to one of them gets status ``suppressed`` and is never attempted.

Addresses are kept in one spelling (:func:`~getfluxly_server.storage.suppressions.normalise`:
trimmed, lower-cased), so ``Ada@Example.com`` and ``ada@example.com`` are one entry. An
address is on the list once: suppressing it again keeps the first entry (its reason and
time: the first cause stands) and says it was there already. Reasons are exactly
:class:`~getfluxly_server.storage.models.SuppressionReason`'s.

:func:`suppress` is what feedback (bounces, complaints, unsubscribes) calls;
:func:`suppressed` is the check before sending; the rest serves the API, for the caller's
project only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from fluxmail import is_email
from getfluxly_server.domain import paging
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.segments import addresses as segment_addresses
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.storage import suppressions as store
from getfluxly_server.storage.models import ADDRESS_MAX, Suppression, SuppressionReason

REASONS: tuple[str, ...] = tuple(reason.value for reason in SuppressionReason)
#: What each reason means, in a ``suppressed`` message's history entry.
_CAUSES = {
    SuppressionReason.HARD_BOUNCE.value: "an earlier message hard-bounced",
    SuppressionReason.COMPLAINT.value: "its recipient reported an earlier message as spam",
    SuppressionReason.SOFT_BOUNCE_LIMIT.value: "earlier messages soft-bounced too often",
    SuppressionReason.UNSUBSCRIBED.value: "its recipient unsubscribed from marketing mail",
    SuppressionReason.MANUAL.value: "it was added to the list by hand",
}


@dataclass(frozen=True)
class Suppressed:
    """An entry of the list, and whether this call added it (False: it was there)."""

    entry: Suppression
    added: bool


@dataclass(frozen=True)
class SuppressionPage:
    """One page of a project's list, in address order, and the cursor of the next page."""

    suppressions: Sequence[Suppression]
    next_cursor: str | None


def address(email: str) -> str:
    """``email`` as the list keeps it; ``validation_error`` (field ``email``) when it is not
    one bare address (``ada@example.com``, no display name)."""
    value = store.normalise(email) if isinstance(email, str) else ""
    if not value or len(value) > ADDRESS_MAX or not is_email(value):
        raise ValidationFailed(
            "email must be one address, like ada@example.com (no display name)", field="email"
        )
    return value


def reason_of(reason: str) -> str:
    """``reason`` if it is one of :data:`REASONS`; otherwise ``validation_error``."""
    if reason not in REASONS:
        raise ValidationFailed(f"reason must be one of {', '.join(REASONS)}", field="reason")
    return reason


def suppress(
    session: Session,
    project_id: str,
    email: str,
    reason: str,
    message_id: str | None = None,
) -> Suppressed:
    """Put ``email`` on the project's list for ``reason`` (from feedback: the message that
    bounced, drew a complaint or was unsubscribed from, as ``message_id``). Safe to call
    again and from concurrent transactions: one entry results, the first one.

    The caller is trusted with ``project_id`` (feedback resolved it from a signed webhook or
    from the message); the address and reason are checked.
    """
    entry, added = store.add_if_absent(
        session, project_id, address(email), reason_of(reason), message_id
    )
    if added and entry.reason == SuppressionReason.UNSUBSCRIBED.value:
        # ``subscribed`` segment rules read the list.
        segment_addresses.changed(session, project_id, [entry.email])
    return Suppressed(entry, added)


def suppressed(
    session: Session, project_id: str, emails: Collection[str], *, transactional: bool = False
) -> set[str]:
    """Which of ``emails`` (as given) may not be sent to in the project: one query
    (``transactional`` mail still goes to addresses that only unsubscribed)."""
    return store.suppressed(session, project_id, emails, transactional=transactional)


def reasons(
    session: Session, project_id: str, emails: Collection[str], *, transactional: bool = False
) -> dict[str, str]:
    """:func:`suppressed` with each address's reason (one query): the check before sending
    that also says why, for the message's history."""
    return store.reasons(session, project_id, emails, transactional=transactional)


def suppressed_detail(reason: str) -> str:
    """The history entry's detail of a message not attempted because its address is on the
    list for ``reason`` (the reason's code is in it, and what it means)."""
    cause = _CAUSES.get(reason, "")
    return (
        f"the address is on the project's suppression list (reason {reason}"
        f"{': ' + cause if cause else ''}); the message was not attempted"
    )


def add(
    session: Session, principal: Principal, project_id: str, email: str, reason: str = "manual"
) -> Suppressed:
    """``POST /v1/projects/{project_id}/suppressions``: :func:`suppress` for the caller's
    project, without a message."""
    project_of(session, principal, project_id)
    return suppress(session, project_id, email, reason)


def remove(session: Session, principal: Principal, project_id: str, email: str) -> None:
    """Take ``email`` off the project's list (mail to it may go out again); ``not_found`` when
    it is not on it."""
    project_of(session, principal, project_id)
    if not store.remove(session, project_id, email):
        raise NotFound("suppressed address")
    # ``subscribed`` segment rules read the list (an unsubscribe taken back).
    segment_addresses.changed(session, project_id, [store.normalise(email)])


def page(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
    reason: str | None = None,
    email: str | None = None,
) -> SuppressionPage:
    """The project's list in address order, ``limit`` at a time (see :mod:`.paging`); only
    entries with ``reason``, and/or whose address contains ``email`` (any case), if given."""
    project_of(session, principal, project_id)
    if reason is not None:
        reason_of(reason)
    after = paging.decode(cursor, 1)[0] if cursor else None
    rows, last = paging.cut(
        store.page(
            session, project_id, limit=limit + 1, after=after, reason=reason, containing=email
        ),
        limit,
    )
    return SuppressionPage(
        suppressions=rows, next_cursor=paging.encode(last.email) if last else None
    )
