"""SMTP2GO over its HTTP API v3 (https://developers.smtp2go.com).

Settings: ``api_key`` (secret; ``api-...``, sent in the ``X-Smtp2go-Api-Key`` header, which
SMTP2GO accepts in place of an ``api_key`` body field; a header keeps the key out of any
payload the API might echo), ``api_url`` (optional; default ``https://api.smtp2go.com``; the
regional hosts ``https://us-api.smtp2go.com``, ``eu-api`` and ``au-api`` also work). SMTP2GO's
console shows the base URL with ``/v3``; a trailing ``/v3`` in ``api_url`` is accepted.

Every call is a ``POST`` with a JSON body; answers are ``{"request_id", "data": {...}}``.

- Verify: ``POST /v3/stats/email_summary`` (a read-only report). 200 -> fine (a warning when
  the plan's ``cycle_remaining`` is 0). API keys carry per-endpoint permissions: an
  ``E_ApiResponseCodes.ENDPOINT_PERMISSION_DENIED`` answer proves the key is valid but may not
  read stats, so verification passes with a warning to allow ``/email/send``.
- Send: ``POST /v3/email/send`` with ``{sender, to: [...], subject, text_body, html_body,
  custom_headers: [{header, value}]}``; ``sender`` is ``Name <addr>``, and Reply-To travels as
  a custom header, as SMTP2GO documents. Success is 200 ``{"data": {"succeeded": 1, "failed":
  0, "failures": [], "email_id": "..."}}``; a 200 with ``failed`` > 0 (or nothing succeeded)
  is a rejection.
- Errors: ``{"data": {"error", "error_code", "field_validation_errors": {"fieldname",
  "message"}}}`` with 400 (invalid request or endpoint permission), 401 (bad key), 402
  (valid but failed), 403 (no permission), 429, 5xx.

Assumption not checked against the live API: the ``error_code`` SMTP2GO sends with a 401
(we rely on the status only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from getfluxly_server.delivery.base import (
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

DEFAULT_URL = "https://api.smtp2go.com"
PERMISSION_DENIED = "E_ApiResponseCodes.ENDPOINT_PERMISSION_DENIED"
AUTH_ADVICE = "Check the API key (Sending → API Keys in SMTP2GO)"
PERMISSION_ADVICE = "Allow the /email/send endpoint in the API key's Permissions tab"


def _details(answer: Answer) -> tuple[str, str]:
    """(error_code, message) from an SMTP2GO answer."""
    data = answer.object().get("data")
    if not isinstance(data, Mapping):
        return "", answer.text()
    message = str(data.get("error") or "")
    fields = data.get("field_validation_errors")
    if isinstance(fields, Mapping) and fields.get("message"):
        message = f"{message} {fields.get('fieldname') or ''}: {fields['message']}".strip()
    failures = data.get("failures")
    if isinstance(failures, list) and failures:
        message = f"{message} {'; '.join(str(f) for f in failures)}".strip()
    return str(data.get("error_code") or ""), message or answer.text()


class SMTP2GOProvider(ClientBase):
    """An SMTP2GO account, reached with an API key."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self._key = credential(secrets, "api_key")
        api_url = config.get("api_url")
        if isinstance(api_url, str) and api_url.rstrip("/").endswith("/v3"):
            api_url = api_url.rstrip("/")[: -len("/v3")]
        self._api = HTTPAPI("SMTP2GO", api_url, DEFAULT_URL, context, [self._key])

    def __repr__(self) -> str:
        return f"SMTP2GOProvider(api_url={str(self._api.base)!r})"

    def _headers(self) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Smtp2go-Api-Key": self._key,
        }

    def _error(self, answer: Answer) -> DeliveryError:
        error_code, message = _details(answer)
        if error_code == PERMISSION_DENIED:
            return self._api.error(answer, message, code="auth_failed", advice=PERMISSION_ADVICE)
        if answer.status == 401:
            return self._api.error(answer, message, advice=AUTH_ADVICE)
        if answer.status == 403:
            return self._api.error(answer, message, advice=PERMISSION_ADVICE)
        if answer.ok:  # a 200 that did not send: SMTP2GO refused a recipient or the message
            return self._api.error(
                answer,
                message,
                code="rejected",
                advice="SMTP2GO did not accept the message for every recipient; its "
                "Activity page says why",
            )
        return self._api.error(answer, message)

    def verify(self) -> list[str]:
        warnings: list[str] = []
        answer = self._api.call(
            "POST", "/v3/stats/email_summary", headers=self._headers(), json_body={}
        )
        error_code, _ = _details(answer)
        if error_code == PERMISSION_DENIED or answer.status == 403:
            warnings.append(
                "SMTP2GO accepted the API key but it may not read account statistics; make "
                "sure it is allowed to use /email/send"
            )
            return warnings
        if not answer.ok:
            raise self._error(answer)
        summary = answer.object().get("data")
        if isinstance(summary, Mapping) and summary.get("cycle_remaining") == 0:
            warnings.append(
                "This SMTP2GO account has used its whole monthly allowance "
                f"({_count(summary.get('cycle_max'))} emails); sends will fail until "
                "the cycle renews or the plan grows"
            )
        return warnings

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        require_body("SMTP2GO", email.text, email.html)
        body: dict[str, Any] = {
            "sender": mailbox(email.from_email, email.from_name),
            "to": list(email.to),
            "subject": email.subject,
        }
        if email.text:
            body["text_body"] = email.text
        if email.html:
            body["html_body"] = email.html
        # SMTP2GO has no metadata field: the message id travels as a custom header, which its
        # webhooks and activity search report.
        headers = [{"header": k, "value": v} for k, v in email.all_headers().items()]
        if email.reply_to:
            headers.insert(0, {"header": "Reply-To", "value": email.reply_to})
        if headers:
            body["custom_headers"] = headers
        answer = self._api.call(
            "POST", "/v3/email/send", headers=self._headers(), json_body=body, delivers=True
        )
        if not answer.ok:
            raise self._error(answer)
        data = answer.object().get("data")
        if not isinstance(data, Mapping):
            raise self._api.unexpected(answer, "without a result", outcome=Outcome.UNKNOWN)
        if data.get("failed") or not data.get("succeeded") or data.get("error"):
            raise self._error(answer)
        message_id = data.get("email_id")
        return DeliveryResult(
            provider_message_id=str(message_id) if message_id else None,
            reply=status_line(answer.status),
            elapsed_ms=answer.elapsed_ms,
        )

    def close(self) -> None:
        self._api.close()


def _count(value: object) -> str:
    """A number from the provider's answer, or "all" (never other upstream text)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "all"


SMTP2GO = ProviderKind(
    name="smtp2go",
    label="SMTP2GO",
    fields=(Field("api_key", secret=True), API_URL),
    build=SMTP2GOProvider,
)
