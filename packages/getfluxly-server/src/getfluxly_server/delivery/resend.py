"""Resend over its HTTP API (https://resend.com/docs/api-reference).

Settings: ``api_key`` (secret; ``Authorization: Bearer re_...``), ``api_url`` (optional;
default ``https://api.resend.com``).

- Verify: ``GET /domains`` answers ``{"data": [{"id", "name", "status", ...}]}``; when no
  domain has status ``verified`` we warn that Resend will only deliver test mail. A key with
  "Sending access" only is refused there with 401 ``restricted_api_key``: that proves the key
  is valid, so verification passes with a warning that the domains could not be checked.
- Send: ``POST /emails`` with JSON ``{from, to: [...], subject, text, html, reply_to,
  headers: {...}}`` (``from`` is ``Name <addr>``; keys we have no value for are left out).
  Success is 200 ``{"id": "..."}``.
- Errors are JSON ``{"statusCode", "message", "name"}``; ``name`` decides the code:
  ``missing_api_key``/``restricted_api_key`` (401) and ``invalid_api_key`` (403) ->
  ``auth_failed``; ``validation_error`` (400, or 403 for an unverified domain or testing-only
  recipient) and the 422 names -> ``rejected``; ``rate_limit_exceeded`` and the
  ``*_quota_exceeded`` names (429) and 5xx -> ``deferred``.
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
    require_body,
    status_line,
)

DEFAULT_URL = "https://api.resend.com"
AUTH_NAMES = {"missing_api_key", "invalid_api_key", "restricted_api_key"}
AUTH_ADVICE = "Check the API key (Resend → API Keys)"
DOMAIN_ADVICE = "Verify the from_email domain in Resend (Domains); until then Resend only "
DOMAIN_ADVICE += "sends from onboarding@resend.dev to your own address"


class ResendProvider(ClientBase):
    """A Resend team, reached with an API key."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self._key = credential(secrets, "api_key")
        self._api = HTTPAPI("Resend", config.get("api_url"), DEFAULT_URL, context, [self._key])

    def __repr__(self) -> str:
        return f"ResendProvider(api_url={str(self._api.base)!r})"

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"Bearer {self._key}"}

    def _error(self, answer: Answer) -> DeliveryError:
        data = answer.object()
        name = str(data.get("name") or "")
        message = data.get("message") or answer.text()
        if name in AUTH_NAMES:
            return self._api.error(answer, message, code="auth_failed", advice=AUTH_ADVICE)
        if answer.status == 403:  # validation_error: unverified domain, testing-only recipient
            return self._api.error(answer, message, code="rejected", advice=DOMAIN_ADVICE)
        return self._api.error(answer, message)

    def verify(self) -> list[str]:
        warnings: list[str] = []
        answer = self._api.call("GET", "/domains", headers=self._headers())
        if answer.status == 401 and answer.object().get("name") == "restricted_api_key":
            warnings.append(
                "This Resend key has Sending access only, so its domains could not be "
                "checked; make sure the from_email domain is verified in Resend"
            )
            return warnings
        if not answer.ok:
            raise self._error(answer)
        domains = answer.object().get("data")
        if not isinstance(domains, list):
            raise self._api.unexpected(answer, "without the list of domains")
        if not any(isinstance(d, Mapping) and d.get("status") == "verified" for d in domains):
            warnings.append(f"No domain is verified in this Resend account. {DOMAIN_ADVICE}")
        return warnings

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        require_body("Resend", email.text, email.html)
        body: dict[str, Any] = {
            "from": mailbox(email.from_email, email.from_name),
            "to": list(email.to),
            "subject": email.subject,
        }
        if email.text:
            body["text"] = email.text
        if email.html:
            body["html"] = email.html
        if email.reply_to:
            body["reply_to"] = email.reply_to
        if headers := email.all_headers():
            body["headers"] = headers
        if email.message_id:  # tags come back in Resend's webhooks
            body["tags"] = [{"name": MESSAGE_ID_FIELD, "value": email.message_id}]
        request_headers = {**self._headers(), "Content-Type": "application/json"}
        if email.idempotency_key:  # Resend keeps it 24 hours: a resend answers the first id
            request_headers["Idempotency-Key"] = email.idempotency_key
        answer = self._api.call(
            "POST", "/emails", headers=request_headers, json_body=body, delivers=True
        )
        if not answer.ok:
            raise self._error(answer)
        message_id = answer.object().get("id")
        if not message_id:
            raise self._api.unexpected(answer, "without an id", outcome=Outcome.UNKNOWN)
        return DeliveryResult(
            provider_message_id=str(message_id) if message_id else None,
            reply=status_line(answer.status),
            elapsed_ms=answer.elapsed_ms,
        )

    def close(self) -> None:
        self._api.close()


RESEND = ProviderKind(
    name="resend",
    label="Resend",
    fields=(Field("api_key", secret=True), API_URL),
    build=ResendProvider,
)
