"""Who a message goes to: an address, or a profile (by its id or your external id) whose
``email`` trait gives the address.

Addresses are kept as :func:`~.addresses.canonical_address` writes them.

A message sent to an address is not linked to a profile, even if one has that address as
its ``email`` trait: traits are not indexed, and a lookup per send would scan the project's
profiles. Erasure still finds such messages by the erased profile's address
(:mod:`getfluxly_server.domain.messages.erasure`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy.orm import Session

from getfluxly_server.domain import identity
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.messages.addresses import canonical_address
from getfluxly_server.domain.messages.errors import NoEmail, ProfileErased
from getfluxly_server.storage import erasures
from getfluxly_server.storage import events as identities
from getfluxly_server.storage import messages as store
from getfluxly_server.storage.models import Profile


@dataclass(frozen=True)
class Recipient:
    """Exactly one of ``email``, ``profile_id``, ``external_id``."""

    email: str | None = None
    profile_id: str | None = None
    external_id: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.email, self.profile_id, self.external_id) if v is not None]
        if len(given) != 1:
            raise ValueError("a recipient is exactly one of email, profile_id, external_id")


@dataclass(frozen=True)
class Resolved:
    """Where the message goes: the address, and the (live) profile when one was named."""

    email: str
    profile_id: str | None


def resolve(session: Session, project_id: str, recipient: Recipient) -> Resolved:
    """The address (and profile) of ``recipient`` in the project.

    A merged profile leads to its survivor. Refusals: an unknown profile or external id
    (``validation_error``, field ``to``), an erased profile or one being erased
    (``profile_erased``), a profile without a valid ``email`` trait (``validation_error``).
    The profile stays share-locked to the end of the transaction (see
    ``storage.messages.lock_profile``), so an erasure cannot slip in before the message is
    recorded.
    """
    if recipient.email is not None:
        return Resolved(canonical_address(recipient.email), None)
    profile: Profile | None = None
    if recipient.profile_id is not None:
        profile = identities.profile(session, project_id, recipient.profile_id)
        missing = "to.profile_id: no such profile in this project"
    else:
        assert recipient.external_id is not None
        found = identities.identities_for(
            session, project_id, [("external_id", recipient.external_id)]
        )
        if found:
            profile = identities.profile(session, project_id, found[0].profile_id)
        missing = "to.external_id: no profile has this external id in this project"
    if profile is None:
        raise ValidationFailed(missing, field="to")
    survivor = store.lock_profile(session, identity.live(session, profile).id)
    assert survivor is not None, "a profile is never deleted, only erased"
    return Resolved(address_of(session, survivor), survivor.id)


def address_of(session: Session, profile: Profile, erasing: Collection[str] | None = None) -> str:
    """The profile's address, from its ``email`` trait; refused if it is (being) erased.
    ``erasing``: the ids of the project's profiles under a pending erasure, if the caller
    read them already (for many profiles in one transaction)."""
    if profile.erased_at is not None:
        raise ProfileErased()
    if erasing is None:
        erasing = {p for e in erasures.pending(session, profile.project_id) for p in e.profile_ids}
    if profile.id in erasing:
        raise ProfileErased(pending=True)
    email = profile.traits.get("email")
    if email is None or email == "":
        raise NoEmail("has no email trait")
    if not isinstance(email, str):
        raise NoEmail("has an email trait that is not text")
    try:
        return canonical_address(email)
    except ValidationFailed:
        raise NoEmail("has an email trait that is not a valid address") from None
