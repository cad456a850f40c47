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
- Send many (the delivery workers): ``POST /email/batch`` with a JSON array of those bodies
  (at most 500); 200 with one ``{ErrorCode, Message, MessageID, To, SubmittedAt}`` per message.
- Errors are JSON ``{"ErrorCode": n, "Message": text}``: HTTP 401 for a bad token (ErrorCode
  10), 422 for a refused message (300 invalid request, 400/401 sender signature missing or
  unconfirmed, 405/412/413 the account may not send, 406 inactive recipient), 429, 5xx.

Assumptions not checked against the live API: the exact ``GET /server`` field names
(``Name``, ``DeliveryType``), and that a ``MessageStream`` naming no stream of the server is a
422 refusal like any other (we do not check the stream at verification).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
#: Messages one ``POST /email/batch`` takes at most (Postmark's documented limit).
BATCH_LIMIT = 500

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

    def _body(self, email: OutgoingEmail) -> dict[str, Any]:
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
        return body

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        answer = self._api.call(
            "POST",
            "/email",
            headers={**self._headers(), "Content-Type": "application/json"},
            json_body=self._body(email),
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

    def deliver_many(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        """Up to :data:`BATCH_LIMIT` messages per ``POST /email/batch`` (one request where
        ``/email`` takes one per message). Postmark answers 200 with one ``{ErrorCode,
        Message, MessageID}`` per message, in order: each is judged as ``/email``'s answer
        would be. A failed request (429, 5xx, a lost connection) settles the whole batch."""
        results: list[DeliveryResult | None] = [None] * len(emails)
        bodies: list[tuple[int, dict[str, Any]]] = []
        for index, email in enumerate(emails):
            try:
                bodies.append((index, self._body(email)))
            except DeliveryError as exc:
                results[index] = exc.result()
        for start in range(0, len(bodies), BATCH_LIMIT):
            part = bodies[start : start + BATCH_LIMIT]
            for (index, _), result in zip(part, self._batch([b for _, b in part]), strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def _batch(self, bodies: list[dict[str, Any]]) -> list[DeliveryResult]:
        try:
            answer = self._api.call(
                "POST",
                "/email/batch",
                headers={**self._headers(), "Content-Type": "application/json"},
                json_body=bodies,
                delivers=True,
            )
        except DeliveryError as exc:
            return [exc.result()] * len(bodies)
        if not answer.ok:
            return [self._error(answer).result(answer.elapsed_ms)] * len(bodies)
        items = answer.json()
        if not isinstance(items, list) or len(items) != len(bodies):
            lost = self._api.unexpected(
                answer, "not with one result per message", outcome=Outcome.UNKNOWN
            )
            return [lost.result(answer.elapsed_ms)] * len(bodies)
        return [self._item(answer, item) for item in items]

    def _item(self, answer: Answer, item: object) -> DeliveryResult:
        """One message's entry of a batch answer, judged as a ``/email`` answer."""
        data = item if isinstance(item, dict) else {}
        if data.get("ErrorCode", -1) == 0 and data.get("MessageID"):
            return DeliveryResult(
                provider_message_id=str(data["MessageID"]),
                reply=status_line(answer.status),
                elapsed_ms=answer.elapsed_ms,
            )
        if data.get("ErrorCode", -1) == 0 or not isinstance(data.get("ErrorCode"), int):
            lost = self._api.unexpected(answer, "without a MessageID", outcome=Outcome.UNKNOWN)
            return lost.result(answer.elapsed_ms)
        # A refused entry is what /email answers with 422 (429 is the only transient code).
        status = 429 if data["ErrorCode"] == 429 else 422
        refused = Answer(status, "", answer.headers, json.dumps(data).encode(), answer.elapsed_ms)
        return self._error(refused).result(answer.elapsed_ms)

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
