"""Subscription state changed for some addresses: tell segments, for every profile with one.

An unsubscribe recorded as feedback reaches segments through its ``email_unsubscribed``
profile event (see :mod:`.membership`), but only for the message's profile: a message sent
to an address alone has none, and two profiles may share an address. A return to the list
has no event at all: the preference page ticking a group again or coming back to all
marketing mail, a suppression added or removed through the API. So ``domain.feedback.record``
(for the unsubscribes it records) and those paths call :func:`changed` in their
transaction; the
``segments.addresses`` job it queues (run once that commits) re-evaluates the project's
profiles with those addresses against the segments whose rules read subscription state
(``{"subscribed": ...}``), recording each entry and exit once, like every other writer of
membership (:mod:`.membership`, under the project's lock).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from getfluxly_server.queue.kinds import JobKind, JobPayload

ADDRESSES_JOB = "segments.addresses"
#: The most addresses one job carries (a larger change is split into several jobs).
MAX_ADDRESSES = 500


class AddressesChanged(JobPayload):
    """Re-evaluate the project's profiles with these addresses (lower-cased) against its
    segments that read subscription state."""

    project_id: str
    emails: list[str]


ADDRESSES_CHANGED = JobKind(ADDRESSES_JOB, AddressesChanged)


def changed(session: Session, project_id: str, emails: Collection[str]) -> None:
    """Queue the re-evaluation for ``emails`` in the caller's transaction (nothing for none)."""
    wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
    ADDRESSES_CHANGED.enqueue_many(
        session,
        (
            AddressesChanged(project_id=project_id, emails=wanted[i : i + MAX_ADDRESSES])
            for i in range(0, len(wanted), MAX_ADDRESSES)
        ),
    )
