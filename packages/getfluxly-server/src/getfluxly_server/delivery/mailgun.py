"""Mailgun over its HTTP API v3 (https://documentation.mailgun.com).

Settings: ``api_key`` (secret; HTTP Basic auth with user ``api``), ``domain`` (the sending
domain), ``region`` (optional, ``us`` | ``eu``, default ``us``; a domain lives in one region
and is unknown to the other), ``api_url`` (optional; default by region
``https://api.mailgun.net`` or ``https://api.eu.mailgun.net``).

- Verify: ``GET /v3/domains/{domain}`` answers ``{"domain": {"name", "state", "type", ...},
  ...}``. ``state`` other than ``active`` and ``type`` ``sandbox`` give warnings; 404 means the
  key's account has no such domain in this region (``auth_failed``, naming the region).
  A *domain sending key* may only send, so the domain lookup is refused (401/403); then we
  POST an empty form to ``/v3/{domain}/messages``: Mailgun authenticates before it validates,
  so 400 "'from' parameter is missing" proves the key can send for the domain (nothing is
  sent) and verification passes with a warning, while 401/403 is ``auth_failed``.
- Send: ``POST /v3/{domain}/messages`` as a form (``application/x-www-form-urlencoded``):
  ``from`` (``Name <addr>``), one ``to`` per recipient, ``subject``, ``text``, ``html``,
  ``h:Reply-To`` and ``h:<Name>`` per custom header. Success is 200 ``{"id": "<...>",
  "message": "Queued. Thank you."}``; the id is returned without its angle brackets, as
  Mailgun's events and webhooks show it.
- Errors: JSON ``{"message": text}``, except 401, which answers the plain text ``Forbidden``.
  A 403 on a send whose message says the domain "is not allowed to send" is the sandbox
  domain's authorized-recipients rule: ``rejected``.

Assumptions not checked against the live API: that authentication precedes validation on
``/messages`` (the sending-key probe relies on it), and the exact sandbox refusal wording.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from getfluxly_server.delivery.base import (
    MESSAGE_ID_FIELD,
    BuildContext,
    ClientBase,
    DeliveryError,
    DeliveryResult,
    Field,
    Outcome,
    OutgoingEmail,
    ProviderKind,
)
from getfluxly_server.delivery.http import (
    API_URL,
    HTTPAPI,
    Answer,
    credential,
    mailbox,
    one_line,
    require_body,
    status_line,
)

REGION_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
AUTH_ADVICE = (
    "Check the API key (a Mailgun private API key or a sending key for this domain), and that "
    "region matches where the domain was created"
)
# A DNS name: it goes into the request path, so nothing else may get through.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+")


def _message(answer: Answer) -> str:
    message = answer.object().get("message")
    return str(message) if message else answer.text()


class MailgunProvider(ClientBase):
    """A Mailgun sending domain, reached with an API key."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self._key = credential(secrets, "api_key")
        self.domain = str(config["domain"]).strip().lower()
        if not _DOMAIN.fullmatch(self.domain):
            raise DeliveryError(
                "validation_error",
                f"domain must be a domain name such as mg.example.com, "
                f"not {one_line(self.domain, 80)!r}",
            )
        self.region = str(config.get("region") or "us")
        if self.region not in REGION_URLS:
            raise DeliveryError("validation_error", "region must be us or eu")
        self._api = HTTPAPI(
            "Mailgun", config.get("api_url"), REGION_URLS[self.region], context, [self._key]
        )

    def __repr__(self) -> str:
        return (
            f"MailgunProvider(domain={self.domain!r}, region={self.region!r}, "
            f"api_url={str(self._api.base)!r})"
        )

    def _headers(self) -> dict[str, str]:
        token = base64.b64encode(f"api:{self._key}".encode()).decode("ascii")
        return {"Accept": "application/json", "Authorization": f"Basic {token}"}

    def _error(self, answer: Answer, *, sending: bool) -> DeliveryError:
        message = _message(answer)
        if sending and answer.status == 403 and "not allowed to send" in message:
            return self._api.error(
                answer,
                message,
                code="rejected",
                advice="A Mailgun sandbox domain only delivers to authorized recipients; add "
                "the recipient in Mailgun, or send from your own domain",
            )
        advice = AUTH_ADVICE if answer.status in (401, 403) else None
        return self._api.error(answer, message, advice=advice)

    def verify(self) -> list[str]:
        warnings: list[str] = []
        answer = self._api.call("GET", f"/v3/domains/{self.domain}", headers=self._headers())
        if answer.status == 404:
            raise self._api.error(
                answer,
                _message(answer),
                code="auth_failed",
                advice=f"This key's account has no domain {self.domain} in Mailgun's "
                f"{self.region.upper()} region; check domain, and set region to "
                f"{'us' if self.region == 'eu' else 'eu'} if the domain was created there",
            )
        if answer.status in (401, 403):
            return warnings + self._verify_sending_key(answer)
        if not answer.ok:
            raise self._error(answer, sending=False)
        domain = answer.object().get("domain")
        if not isinstance(domain, Mapping):
            raise self._api.unexpected(answer, "without the domain")
        state = domain.get("state")
        if state != "active":
            shown = state if state in ("unverified", "disabled") else "not active"
            warnings.append(
                f"Mailgun reports the domain {self.domain} as {shown}: add the "
                "DNS records Mailgun lists for it, then check again"
            )
        if domain.get("type") == "sandbox":
            warnings.append(
                f"{self.domain} is a Mailgun sandbox domain: it only delivers to authorized "
                "recipients"
            )
        return warnings

    def _verify_sending_key(self, refused: Answer) -> list[str]:
        # An empty form never sends: a key that may send gets 400 for the missing fields.
        probe = self._api.call(
            "POST", f"/v3/{self.domain}/messages", headers=self._headers(), form=[]
        )
        if probe.status == 400:
            return [
                "This is a Mailgun domain sending key: it can send for "
                f"{self.domain}, but could not read the domain's state to check its DNS setup"
            ]
        raise self._error(refused, sending=False)

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        require_body("Mailgun", email.text, email.html)
        form = [("from", mailbox(email.from_email, email.from_name))]
        form += [("to", address) for address in email.to]
        form.append(("subject", email.subject))
        if email.text:
            form.append(("text", email.text))
        if email.html:
            form.append(("html", email.html))
        if email.reply_to:
            form.append(("h:Reply-To", email.reply_to))
        form += [(f"h:{name}", value) for name, value in email.all_headers().items()]
        if email.message_id:  # user variables come back in Mailgun's events and webhooks
            form.append((f"v:{MESSAGE_ID_FIELD}", email.message_id))
        answer = self._api.call(
            "POST",
            f"/v3/{self.domain}/messages",
            headers=self._headers(),
            form=form,
            delivers=True,
        )
        if not answer.ok:
            raise self._error(answer, sending=True)
        data = answer.object()
        message_id = str(data.get("id") or "").strip("<>") or None
        if message_id is None:
            raise self._api.unexpected(answer, "without an id", outcome=Outcome.UNKNOWN)
        return DeliveryResult(
            provider_message_id=message_id,
            reply=status_line(answer.status),
            elapsed_ms=answer.elapsed_ms,
        )

    def close(self) -> None:
        self._api.close()


MAILGUN = ProviderKind(
    name="mailgun",
    label="Mailgun",
    fields=(
        Field("api_key", secret=True),
        Field("domain"),
        Field("region", required=False, choices=tuple(REGION_URLS)),
        API_URL,
    ),
    build=MailgunProvider,
)
