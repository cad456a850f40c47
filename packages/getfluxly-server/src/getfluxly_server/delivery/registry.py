"""Every provider type the platform knows, by the name used in the API."""

from __future__ import annotations

from getfluxly_server.delivery.base import ProviderKind
from getfluxly_server.delivery.mailgun import MAILGUN
from getfluxly_server.delivery.postmark import POSTMARK
from getfluxly_server.delivery.resend import RESEND
from getfluxly_server.delivery.sendgrid import SENDGRID
from getfluxly_server.delivery.ses import SES
from getfluxly_server.delivery.smtp import SMTP
from getfluxly_server.delivery.smtp2go import SMTP2GO

PROVIDERS: dict[str, ProviderKind] = {
    kind.name: kind for kind in (SMTP, SES, RESEND, MAILGUN, SMTP2GO, POSTMARK, SENDGRID)
}
