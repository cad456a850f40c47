"""From claimed message rows to what a provider sends: checks, rendering, the outgoing email.

:func:`compose` takes a claimed batch and what it refers to (read once per batch by
:func:`load`) and sorts every message into one of two piles: ready to send (an
:class:`~getfluxly_server.delivery.base.OutgoingEmail` per message, grouped by provider), or
finished without an attempt (a :class:`~getfluxly_server.storage.outbox.Verdict`):

- the address is on the project's suppression list -> ``suppressed`` (never attempted); an
  address that only unsubscribed still gets transactional mail;
- a marketing message of a subscription group its recipient left -> ``suppressed``;
- the message or its profile was erased -> ``suppressed`` ("profile erased"; never sent);
- no provider, the provider was deleted -> ``failed``;
- the template is gone, or does not render (a sandbox limit: endless loop, gigabytes of
  output, a missing include) -> ``failed`` with the renderer's detail (field, line, reason).

Templates render at their current version, through a :class:`TemplateCache` keyed by
``(id, version)``; inline content of a call (subject, html, text: Liquid too) is compiled
once per distinct content. The values are the contract's: the profile's traits with its id
and the message's address as ``profile.email``, the call's ``data``, and ``project``, and
(given :class:`~getfluxly_server.domain.tracking.Links`) ``unsubscribe_url`` and
``preferences_url``.

Given the links, the outgoing email also carries them (``domain/tracking``): a marketing
message (``transactional`` false) gets ``List-Unsubscribe`` and ``List-Unsubscribe-Post``
(RFC 8058 one-click); a message with ``tracking`` on gets its HTML links through the click
redirect and the open pixel.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from getfluxly_server.delivery.base import OutgoingEmail
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.suppressions import suppressed_detail
from getfluxly_server.domain.template_store import fields_of, partial_source
from getfluxly_server.domain.templates import (
    CompiledTemplate,
    PartialLoader,
    TemplateCache,
    TemplateFields,
    render_message,
)
from getfluxly_server.domain.tracking import Links, unsubscribe_headers
from getfluxly_server.storage import outbox, preferences, suppressions
from getfluxly_server.storage import templates as template_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    EmailProvider,
    MessageStatus,
    Project,
    Template,
)
from getfluxly_server.storage.outbox import ClaimedMessage, Verdict

log = logging.getLogger("getfluxly.delivery")

ERASED = "the profile was erased; the message is never sent"
LEFT_GROUP = "the recipient unsubscribed from the subscription group {!r}; not attempted"


@dataclass
class Context:
    """What a claimed batch refers to, read in one query per kind."""

    templates: dict[str, Template] = field(default_factory=dict)
    profiles: dict[str, outbox.Recipient] = field(default_factory=dict)
    projects: dict[str, Project] = field(default_factory=dict)
    providers: dict[str, EmailProvider] = field(default_factory=dict)
    #: Ids of messages not to send, with why (a suppressed address, a group left).
    blocked: dict[str, str] = field(default_factory=dict)


def load(session: Session, messages: Sequence[ClaimedMessage]) -> Context:
    """Everything ``messages`` refer to; the suppression check is made here, at claim time
    (so an unsubscribe is effective for the very next send)."""
    # (project, transactional) -> addresses: transactional mail still goes to an address
    # that only unsubscribed; (project) -> (address, group) of marketing mail of a group.
    by_kind: dict[tuple[str, bool], set[str]] = defaultdict(set)
    in_groups: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for message in messages:
        by_kind[message.project_id, message.transactional].add(message.to_email)
        if message.subscription_group is not None and not message.transactional:
            in_groups[message.project_id].add((message.to_email, message.subscription_group))
    context = Context(
        templates=outbox.templates(session, {m.template_id for m in messages if m.template_id}),
        profiles=outbox.profiles(session, {m.profile_id for m in messages if m.profile_id}),
        projects=outbox.projects(session, {project for project, _ in by_kind}),
        providers=outbox.providers(session, {m.provider_id for m in messages if m.provider_id}),
    )
    suppressed = {
        (project_id, transactional, email): reason
        for (project_id, transactional), emails in by_kind.items()
        for email, reason in suppressions.reasons(
            session, project_id, emails, transactional=transactional
        ).items()
    }
    left = {
        (project_id, email, group)
        for project_id, pairs in in_groups.items()
        for email, group in preferences.unsubscribed(session, project_id, pairs)
    }
    for m in messages:
        if (reason := suppressed.get((m.project_id, m.transactional, m.to_email))) is not None:
            context.blocked[m.id] = suppressed_detail(reason)
        elif m.subscription_group and (m.project_id, m.to_email, m.subscription_group) in left:
            context.blocked[m.id] = LEFT_GROUP.format(m.subscription_group)
    return context


@dataclass
class Composed:
    """A batch sorted: emails ready to send by provider id, and messages already decided."""

    ready: dict[str, list[tuple[ClaimedMessage, OutgoingEmail]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    decided: list[Verdict] = field(default_factory=list)


class Composer:
    """Renders claimed messages (thread-safe: the cache is, and nothing else is kept)."""

    def __init__(
        self, db: Database, cache: TemplateCache | None = None, links: Links | None = None
    ) -> None:
        self.db = db
        self.cache = cache or TemplateCache()
        #: The server's tracking and unsubscribe links (None: mail goes without them).
        self.links = links

    def compose(self, messages: Sequence[ClaimedMessage], context: Context) -> Composed:
        out = Composed()
        for message in messages:
            try:
                ready = self._one(message, context)
            except DomainError as exc:  # the template's fault: recorded, the batch goes on
                ready = _failed(message, f"the message could not be rendered: {exc.detail}")
            except Exception as exc:  # a bug must not take the worker (or the batch) down
                log.exception("rendering message %s failed", message.id)
                ready = _failed(message, f"the message could not be rendered ({exc!r})")
            if isinstance(ready, Verdict):
                out.decided.append(ready)
            else:
                assert message.provider_id is not None
                out.ready[message.provider_id].append((message, ready))
        return out

    def _one(self, message: ClaimedMessage, context: Context) -> OutgoingEmail | Verdict:
        profile = context.profiles.get(message.profile_id or "")
        if message.erased_at is not None or (profile is not None and profile.erased_at):
            return Verdict(message.id, MessageStatus.SUPPRESSED.value, ERASED)
        if message.id in context.blocked:
            return Verdict(message.id, MessageStatus.SUPPRESSED.value, context.blocked[message.id])
        provider = context.providers.get(message.provider_id or "")
        if provider is None or provider.project_id != message.project_id:
            why = "was deleted" if message.provider_id else "is set (and the project has none)"
            return _failed(message, f"no email provider {why}; the message was not attempted")
        compiled = self._compiled(message, context)
        if isinstance(compiled, Verdict):
            return compiled
        project = context.projects.get(message.project_id)
        # The contract's variables (templates.values.variables), built here without its copy
        # to plain data: render_message makes that copy of whatever it is given anyway.
        person: dict[str, object] = dict(profile.traits) if profile is not None else {}
        if message.profile_id is not None:
            person["id"] = message.profile_id
        person["email"] = message.to_email
        values: dict[str, object] = {
            "profile": person,
            "data": message.data,
            "project": {"id": message.project_id, "name": project.name if project else None},
        }
        headers: dict[str, str] = {}
        if self.links is not None:
            if message.transactional:
                values["unsubscribe_url"] = self.links.unsubscribe_url(message.id)
            else:
                # The header's link is the template's (one signature per message, not two).
                headers = unsubscribe_headers(self.links, message.id)
                values["unsubscribe_url"] = headers["List-Unsubscribe"][1:-1]
            values["preferences_url"] = self.links.preferences_url(message.id)
        rendered = render_message(compiled, values, partials=self._partials(message.project_id))
        html = rendered.html
        if self.links is not None and message.tracking and html:
            html = self.links.rewrite_html(html, message.id)
        return OutgoingEmail(
            from_email=provider.from_email,
            from_name=provider.from_name,
            reply_to=provider.reply_to,
            to=(message.to_email,),
            subject=rendered.subject,
            html=html,
            text=rendered.text,
            headers=headers,
            message_id=message.id,
            idempotency_key=message.idempotency_key or message.id,
        )

    def _compiled(self, message: ClaimedMessage, context: Context) -> CompiledTemplate | Verdict:
        if message.template_id is not None:
            template = context.templates.get(message.template_id)
            if template is None or template.project_id != message.project_id:
                return _failed(message, "its template no longer exists")
            return self.cache.get((template.id, template.version), fields_of(template))
        if not message.subject or not (message.html or message.text):
            return _failed(message, "it has neither a template nor a subject and a body")
        inline = TemplateFields(subject=message.subject, html=message.html, text=message.text)
        return self.cache.get(("inline", inline), inline)

    def _partials(self, project_id: str) -> PartialLoader:
        """``include``/``render`` names -> what the project's live template of that name
        includes (:func:`~getfluxly_server.domain.template_store.partial_source`), read when a
        template includes one (rendering runs outside any transaction)."""

        def load_partial(name: str) -> str | None:
            with self.db.read() as session:
                found = template_store.live_by_name(session, project_id, name)
                return None if found is None else partial_source(found)

        return load_partial


def _failed(message: ClaimedMessage, detail: str) -> Verdict:
    return Verdict(message.id, MessageStatus.FAILED.value, detail, last_reply=detail)
