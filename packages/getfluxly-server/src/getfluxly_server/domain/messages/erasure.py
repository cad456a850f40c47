"""An erased person's messages: scrubbed, and never sent.

Called by the erasure (``domain.identity.erase``) in its transaction, after the profiles are
marked erased: a send recording a message for one of them holds the profile's share lock
(``storage.messages.lock_profile``), so either its message is committed before the profile
changes (and this scrub sees it) or the send sees ``erased_at`` and is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import suppress
from datetime import datetime

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.messages.addresses import canonical_address
from getfluxly_server.storage import messages as store
from getfluxly_server.storage.models import Profile

#: The history entry of a message that was still to be sent when its profile was erased.
PENDING_DETAIL = "profile erased"


def addresses(profiles: Iterable[Profile]) -> set[str]:
    """The addresses the profiles' ``email`` traits name, in every form the ledger may hold
    them (as written, as stored, lower-cased). Read before the traits are erased."""
    found: set[str] = set()
    for profile in profiles:
        email = profile.traits.get("email")
        if not isinstance(email, str) or not email.strip():
            continue
        found |= {email.strip(), email.strip().lower()}
        with suppress(ValidationFailed):  # not an address: no message went to it
            found.add(canonical_address(email))
    return found


def scrub(
    session: Session,
    project_id: str,
    profile_ids: Collection[str],
    emails: Iterable[str],
    when: datetime,
) -> int:
    """Scrub the messages of ``profile_ids`` and those to ``emails`` in the project (see
    ``storage.messages.erase``): pending ones become ``failed`` ("profile erased") first.
    Returns how many messages were scrubbed."""
    return store.erase(
        session, project_id, profile_ids, emails, when, pending_detail=PENDING_DETAIL
    )
