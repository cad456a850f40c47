"""The relays whose webhooks GetFluxly takes, one small module each (how a post verifies,
how its payload reads), by the slug of their URL (``/webhooks/<slug>/{project_id}``)."""

from __future__ import annotations

from collections.abc import Mapping

from getfluxly_server.domain.feedback.relays.base import (
    Material,
    Parsed,
    Relay,
    Unreadable,
)
from getfluxly_server.domain.feedback.relays.brevo import Brevo
from getfluxly_server.domain.feedback.relays.generic import Generic
from getfluxly_server.domain.feedback.relays.mailgun import Mailgun
from getfluxly_server.domain.feedback.relays.mailtrap import Mailtrap
from getfluxly_server.domain.feedback.relays.postmark import Postmark
from getfluxly_server.domain.feedback.relays.resend import Resend
from getfluxly_server.domain.feedback.relays.sendgrid import SendGrid
from getfluxly_server.domain.feedback.relays.ses import Ses
from getfluxly_server.domain.feedback.relays.smtp2go import Smtp2go
from getfluxly_server.domain.feedback.sns import SnsPolicy

__all__ = ["NAMES", "Material", "Parsed", "Relay", "Unreadable", "build"]

#: Every slug, in the order the docs list them.
NAMES = ("postmark", "sendgrid", "mailgun", "ses", "smtp2go", "resend", "brevo", "mailtrap", "smtp")


def build(sns: SnsPolicy) -> Mapping[str, Relay]:
    """Every relay's adapter by slug (SES's with where SNS may be fetched from)."""
    adapters: list[Relay] = [
        Postmark(), SendGrid(), Mailgun(), Ses(sns), Smtp2go(), Resend(), Brevo(), Mailtrap(),
        Generic(),
    ]  # fmt: skip
    built = {adapter.name: adapter for adapter in adapters}
    assert tuple(built) == NAMES
    return built
