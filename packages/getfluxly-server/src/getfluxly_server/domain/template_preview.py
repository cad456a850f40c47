"""The preview of a saved template: rendered as a real send would render it, with warnings.

``POST /v1/templates/{id}/preview`` (engine spec section 1). The values:

* ``profile``: with ``profile_id``, that profile of the template's project (a merged id leads
  to the profile it was merged into; an erased one is ``not_found``, its data being gone):
  its traits, ``profile.id`` and ``profile.email`` (its ``email`` trait). ``traits`` given
  too are laid over the profile's (a given key wins), so a preview can try a value the
  profile does not have. Without ``profile_id``, ``traits`` alone make the profile.
* ``event``: ``{"name", "properties"}`` as given; ``data`` as given.
* ``project``: ``{"id", "name"}`` of the template's project.
* ``unsubscribe_url`` and ``preferences_url``: placeholders on the server's public URL
  (``GETFLUXLY_PUBLIC_URL``) ending in ``/preview``, since a preview has no recipient to sign
  real ones for; a real send carries the signed links.

Includes resolve to the project's live templates (:func:`.template_store.partials_for`). A
render that breaks a sandbox limit (an endless loop, gigabytes of output) or includes a
template that does not exist is ``validation_error`` naming the field and the reason, as a
worker would record it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain import template_store
from getfluxly_server.domain.errors import DomainError, NotFound
from getfluxly_server.domain.identity import live
from getfluxly_server.domain.templates import compile_template, preview, variables
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import events as event_store
from getfluxly_server.storage import tenancy as tenancy_store

#: Where the placeholder links of a preview point, under the public URL.
UNSUBSCRIBE_PLACEHOLDER = "/unsubscribe/preview"
PREFERENCES_PLACEHOLDER = "/preferences/preview"


def preview_template(
    session: Session,
    principal: Principal,
    template_id: str,
    *,
    public_url: str,
    profile_id: str | None = None,
    traits: Mapping[str, object] | None = None,
    event_name: str | None = None,
    event_properties: Mapping[str, object] | None = None,
    data: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """``{"subject", "html", "text", "warnings"}`` (see :func:`~.templates.preview`).

    Raises:
        NotFound: the template (or the profile) is not the caller's, or does not exist.
        ValidationFailed: the render stopped (a limit, a missing or broken include).
    """
    row = template_store.find(session, principal, template_id)
    project = tenancy_store.get_project(session, principal.workspace_id, row.project_id)
    assert project is not None  # find() checked it
    email: str | None = None
    profile_traits: dict[str, object] | None = dict(traits) if traits is not None else None
    if profile_id is not None:
        profile = event_store.profile(session, row.project_id, profile_id)
        if profile is None:
            raise NotFound("profile")
        profile = live(session, profile)
        if profile.erased_at is not None:
            raise DomainError(
                "not_found",
                "That profile was erased: its data is gone; preview with traits instead",
                extra={"field": "profile_id"},
            )
        profile_id = profile.id
        profile_traits = {**profile.traits, **(traits or {})}
        found = profile_traits.get("email")
        email = found if isinstance(found, str) else None
    base = public_url.rstrip("/")
    values = variables(
        profile_id=profile_id,
        email=email,
        traits=profile_traits,
        event_name=event_name,
        event_properties=event_properties,
        data=data,
        project={"id": project.id, "name": project.name},
        unsubscribe_url=base + UNSUBSCRIBE_PLACEHOLDER,
        preferences_url=base + PREFERENCES_PLACEHOLDER,
    )
    compiled = compile_template(template_store.fields_of(row))
    return preview(compiled, values, partials=template_store.partials_for(session, row.project_id))
