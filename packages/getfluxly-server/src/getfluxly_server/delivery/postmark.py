"""Postmark over its HTTP API (https://postmarkapp.com/developer, the current REST API).

Settings: ``server_token`` (secret: a *Server* API token, sent as ``X-Postmark-Server-Token``),
``message_stream`` (optional; Postmark's default transactional stream ``outbound`` when unset),
``api_url`` (optional; default ``https://api.postmarkapp.com``).

- Verify: ``GET /server`` (the token's own server). 200 -> fine, with a warning when the
  server's ``DeliveryType`` is ``Sandbox`` (Postmark accepts but never delivers).
- Send: ``POST /email`` with JSON ``{From, To, Subject, TextBody, HtmlBody, ReplyTo,
  Headers: [{Name, Value}], MessageStream}``; ``From`` is ``Name <addr>``, ``To`` the
  recipients comma-separated; keys we have no value for are left out. Success is 200
  ``{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}``.
- Errors are JSON ``{"ErrorCode": n, "Message": text}``: HTTP 401 for a bad token (ErrorCode
  10), 422 for a refused message (300 invalid request, 400/401 sender signature missing or
  unconfirmed, 405/412/413 the account may not send, 406 inactive recipient), 429, 5xx.

Assumptions not checked against the live API: the exact ``GET /server`` field names
(``Name``, ``DeliveryType``), and that a ``MessageStream`` naming no stream of the server is a
422 refusal like any other (we do not check the stream at verification).
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

DEFAULT_URL = "https://api.postmarkapp.com"
DEFAULT_STREAM = "outbound"

#: Postmark ErrorCode -> what to try (they come with HTTP 401/422).
_ADVICE = {
    10: "Use a Server API token (your server → API Tokens), not the Account API token",
    400: "Add and confirm a sender signature for from_email, or verify its domain, in Postmark",
    401: "Confirm the sender signature for from_email in Postmark (check its inbox)",
    405: "The Postmark account may not send (out of credits?); check its billing",
    406: "Postmark marked a recipient inactive after a hard bounce or spam complaint; "
    "reactivate it under the stream's Suppressions",
    412: "While the Postmark account awaits approval it can only send to its own domain",
    413: "The Postmark account may not send right now; see the account's status page",
}


class PostmarkProvider(ClientBase):
    """A Postmark server, reached with its Server API token."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self._token = credential(secrets, "server_token")
        self.message_stream = str(config.get("message_stream") or DEFAULT_STREAM)
        self._api = HTTPAPI("Postmark", config.get("api_url"), DEFAULT_URL, context, [self._token])

    def __repr__(self) -> str:
        return f"PostmarkProvider(api_url={str(self._api.base)!r})"

    def _headers(self) -> dict[str, str]:
        # Postmark asks for both Accept and Content-Type to be application/json.
        return {"Accept": "application/json", "X-Postmark-Server-Token": self._token}

    def _error(self, answer: Answer) -> DeliveryError:
        data = answer.object()
        error_code = data.get("ErrorCode")
        message = data.get("Message") or answer.text()
        code = "auth_failed" if error_code == 10 else "rejected" if answer.ok else None
        advice = _ADVICE.get(error_code) if isinstance(error_code, int) else None
        if advice is None and answer.status == 401:
            advice = _ADVICE[10]
        return self._api.error(answer, message, code=code, advice=advice)

    def verify(self) -> list[str]:
        warnings: list[str] = []
        answer = self._api.call("GET", "/server", headers=self._headers())
        if not answer.ok:
            raise self._error(answer)
        server = answer.object()
        if server.get("DeliveryType") == "Sandbox":
            warnings.append(
                "This Postmark server is in Sandbox mode: it accepts mail but never delivers it"
            )
        return warnings

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        require_body("Postmark", email.text, email.html)
        body: dict[str, Any] = {
            "From": mailbox(email.from_email, email.from_name),
            "To": ", ".join(email.to),
            "Subject": email.subject,
            "MessageStream": self.message_stream,
        }
        if email.text:
            body["TextBody"] = email.text
        if email.html:
            body["HtmlBody"] = email.html
        if email.reply_to:
            body["ReplyTo"] = email.reply_to
        if headers := email.all_headers():
            body["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]
        if email.message_id:  # Metadata comes back in Postmark's webhooks
            body["Metadata"] = {MESSAGE_ID_FIELD: email.message_id}
        answer = self._api.call(
            "POST",
            "/email",
            headers={**self._headers(), "Content-Type": "application/json"},
            json_body=body,
            delivers=True,
        )
        data = answer.object()
        # Postmark signals failure with a non-zero ErrorCode even where the status is 2xx.
        if not answer.ok or data.get("ErrorCode", 0) != 0:
            raise self._error(answer)
        message_id = data.get("MessageID")
        if not message_id:
            raise self._api.unexpected(answer, "without a MessageID", outcome=Outcome.UNKNOWN)
        return DeliveryResult(
            provider_message_id=str(message_id),
            reply=status_line(answer.status),
            elapsed_ms=answer.elapsed_ms,
        )

    def close(self) -> None:
        self._api.close()


POSTMARK = ProviderKind(
    name="postmark",
    label="Postmark",
    fields=(
        Field("server_token", secret=True),
        Field("message_stream", required=False),
        API_URL,
    ),
    build=PostmarkProvider,
)
