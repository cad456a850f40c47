"""Twilio SendGrid over its Web API v3 (https://www.twilio.com/docs/sendgrid/api-reference).

Settings: ``api_key`` (secret; sent as ``Authorization: Bearer <key>``), ``api_url`` (optional;
default ``https://api.sendgrid.com``; EU-pinned subusers use ``https://api.eu.sendgrid.com``).

- Verify: ``GET /v3/scopes`` answers ``{"scopes": [...]}``, the key's own permissions. The key
  must hold ``mail.send``; without it verification fails with ``auth_failed`` saying so.
- Send: ``POST /v3/mail/send`` with JSON ``{personalizations: [{to: [{email}]}], from: {email,
  name}, reply_to: {email}, subject, content: [{type: "text/plain", value}, {type:
  "text/html", value}], headers: {...}}`` (text/plain first, as SendGrid requires; keys we have
  no value for are left out). All recipients share one personalization, like one SMTP message
  to several recipients. Success is ``202 Accepted`` with an empty body and the id in the
  ``X-Message-Id`` header.
- Errors are JSON ``{"errors": [{"message", "field", "help"}]}``: 400 invalid request, 401 bad
  key, 403 key lacks permission *or* the from address is not a verified Sender Identity (that
  one is about the message, so it maps to ``rejected``, not ``auth_failed``), 413, 429, 5xx.

Assumption not checked against the live API: that ``GET /v3/scopes`` is allowed for every
valid key, including restricted keys that only hold ``mail.send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from getfluxly_server.delivery.base import (
    MESSAGE_ID_FIELD,
    BuildContext,
    ClientBase,
    DeliveryError,
    DeliveryResult,
    Field,
    OutgoingEmail,
    ProviderKind,
)
from getfluxly_server.delivery.http import (
    API_URL,
    HTTPAPI,
    Answer,
    credential,
    require_body,
    status_line,
)

DEFAULT_URL = "https://api.sendgrid.com"
AUTH_ADVICE = "Check the API key (Settings → API Keys); it needs the Mail Send permission"
SENDER_ADVICE = (
    "Verify from_email as a Single Sender or authenticate its domain in SendGrid "
    "(Settings → Sender Authentication)"
)


def _messages(answer: Answer) -> str:
    errors = answer.object().get("errors")
    if isinstance(errors, list):
        texts = []
        for item in errors:
            if isinstance(item, Mapping) and item.get("message"):
                field = item.get("field")
                texts.append(f"{field}: {item['message']}" if field else str(item["message"]))
        if texts:
            return "; ".join(texts)
    return answer.text()


class SendGridProvider(ClientBase):
    """A SendGrid account (or subuser), reached with an API key."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self._key = credential(secrets, "api_key")
        self._api = HTTPAPI("SendGrid", config.get("api_url"), DEFAULT_URL, context, [self._key])

    def __repr__(self) -> str:
        return f"SendGridProvider(api_url={str(self._api.base)!r})"

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"Bearer {self._key}"}

    def _error(self, answer: Answer) -> DeliveryError:
        message = _messages(answer)
        if answer.status == 403 and "sender identity" in message.lower():
            return self._api.error(answer, message, code="rejected", advice=SENDER_ADVICE)
        advice = AUTH_ADVICE if answer.status in (401, 403) else None
        return self._api.error(answer, message, advice=advice)

    def verify(self) -> list[str]:
        warnings: list[str] = []
        answer = self._api.call("GET", "/v3/scopes", headers=self._headers())
        if not answer.ok:
            raise self._error(answer)
        scopes = answer.object().get("scopes")
        if not isinstance(scopes, list):
            raise self._api.unexpected(answer, "without the list of scopes")
        if "mail.send" not in scopes:
            raise DeliveryError(
                "auth_failed",
                "SendGrid accepted the API key, but it lacks the Mail Send permission; edit "
                "the key (Settings → API Keys) to give it Mail Send access",
            )
        return warnings

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        require_body("SendGrid", email.text, email.html)
        sender: dict[str, str] = {"email": email.from_email}
        if email.from_name:
            sender["name"] = email.from_name
        content = []
        # SendGrid requires text/plain to come first when both are present.
        if email.text:
            content.append({"type": "text/plain", "value": email.text})
        if email.html:
            content.append({"type": "text/html", "value": email.html})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": address} for address in email.to]}],
            "from": sender,
            "subject": email.subject,
            "content": content,
        }
        if email.reply_to:
            body["reply_to"] = {"email": email.reply_to}
        if headers := email.all_headers():
            body["headers"] = headers
        if email.message_id:  # custom_args come back in SendGrid's event webhook
            body["custom_args"] = {MESSAGE_ID_FIELD: email.message_id}
        answer = self._api.call(
            "POST",
            "/v3/mail/send",
            headers={**self._headers(), "Content-Type": "application/json"},
            json_body=body,
            delivers=True,
        )
        if not answer.ok:
            raise self._error(answer)
        return DeliveryResult(
            provider_message_id=answer.headers.get("X-Message-Id"),
            reply=status_line(answer.status),
            elapsed_ms=answer.elapsed_ms,
        )

    def close(self) -> None:
        self._api.close()


SENDGRID = ProviderKind(
    name="sendgrid",
    label="SendGrid",
    fields=(Field("api_key", secret=True), API_URL),
    build=SendGridProvider,
)
