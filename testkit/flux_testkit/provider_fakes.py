"""Local fakes of the email providers' HTTP APIs, for testing the HTTP connectors.

Each fake is a real HTTP server on ``127.0.0.1`` (stdlib :mod:`http.server`, one thread per
request, port chosen by the OS) that speaks one provider's documented API strictly enough to
catch a connector's mistakes: it checks the credentials the provider checks (for Amazon SES
it recomputes the AWS Signature Version 4 independently of the connector), validates the
request body as the provider documents it, answers with the provider's success and error
shapes, and records what it received::

    with PostmarkFake() as fake:
        client = POSTMARK.build(
            {"api_url": fake.url}, {"server_token": fake.server_token}, BuildContext()
        )
        client.send(email)
        [message] = fake.messages
        assert message.json["From"] == "Acme <hello@example.com>"

Common API (:class:`FakeProviderServer`):

- ``start()``/``stop()`` or ``with``; ``url`` (``http://127.0.0.1:<port>``, the connector's
  ``api_url``). ``stop()`` closes every socket and joins every thread, and interrupts scripted
  delays, so tests stay clean under ``-W error``.
- ``requests``: every request received (:class:`Received`); ``messages``: the sends the fake
  accepted; ``problems``: why the fake refused requests (validation failures, bad
  credentials), handy in assertion messages.
- ``fail_next(status, body=None, *, message=None, ...)``: answer the next request(s) with
  ``status`` and, unless ``body`` is given, the provider's own error body for that status
  (401, 403, 422/400 rejections, 429, 500, 503...), its text replaced by ``message`` if given.
- ``slow_next(seconds, ...)``: wait before answering (to trip a client timeout).
- ``reset_next(...)``: take the request, then reset the connection without answering.

Fakes: :class:`PostmarkFake`, :class:`SendGridFake`, :class:`MailgunFake`,
:class:`ResendFake`, :class:`SMTP2GOFake`, :class:`SESFake`; each one's docstring says what it
checks. They are deliberately *stricter* than the real services in one way: unknown request
fields are refused, so a misspelt field name fails a test instead of being silently ignored.
Error bodies follow each provider's documented shape; their wording is approximate.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, quote

from flux_testkit.httpfake import RESET, FakeService, Request
from flux_testkit.httpfake import Reply as BaseReply

__all__ = [
    "FakeProviderServer",
    "MailgunFake",
    "PostmarkFake",
    "Received",
    "Reply",
    "ResendFake",
    "SESFake",
    "SMTP2GOFake",
    "SendGridFake",
]


@dataclass(frozen=True)
class Received(Request):
    """One HTTP request as the fake received it."""

    @property
    def form(self) -> dict[str, list[str]]:
        """The body as a form (``application/x-www-form-urlencoded`` or ``multipart/form-data``),
        every value of a repeated name in order; ``{}`` for an empty body."""
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            head = f"Content-Type: {content_type}\r\n\r\n".encode()
            message = BytesParser(policy=HTTP_POLICY).parsebytes(head + self.body)
            values: dict[str, list[str]] = {}
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    values.setdefault(name, []).append(payload.decode("utf-8"))
            return values
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


@dataclass(frozen=True)
class Reply(BaseReply):
    """What a fake answers."""

    @classmethod
    def text(cls, status: int, text: str) -> Reply:
        return cls(status, text.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})


@dataclass
class _Scripted:
    #: (status, message): the fake's own error reply for that status, with that text.
    reply: Reply | tuple[int, str | None] | object | None
    delay: float
    times: int
    path: str | None


class FakeProviderServer(FakeService):
    """Base of the fakes: the server, recording, and scripted failures (see module doc).

    Subclasses implement :meth:`route` (answer a request the script did not take) and
    :meth:`error` (the provider's error reply for a status).
    """

    label: ClassVar[str] = "provider"
    request_type = Received

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._messages: list[Received] = []
        self._problems: list[str] = []
        self._script: list[_Scripted] = []

    # -- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[Received]:
        """The send requests the fake accepted, oldest first."""
        with self._lock:
            return list(self._messages)

    @property
    def problems(self) -> list[str]:
        """Why the fake refused requests (or crashed), oldest first."""
        with self._lock:
            return list(self._problems)

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (to ``path`` only, if given) with ``status``.

        ``body`` None: the provider's own error reply for ``status`` (see :meth:`error`),
        with ``message`` as its text if given; bytes/str: sent as is; anything else: sent
        as JSON.
        """
        reply: Reply | tuple[int, str | None]
        if body is None:
            reply = (status, message)
        elif isinstance(body, bytes):
            reply = Reply(status, body, dict(headers or {}))
        elif isinstance(body, str):
            reply = Reply(status, body.encode("utf-8"), dict(headers or {}))
        else:
            reply = Reply.json(status, body, headers)
        with self._lock:
            self._script.append(_Scripted(reply, 0.0, times, path))

    def slow_next(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Wait ``seconds`` before handling the next ``times`` requests (to ``path``)."""
        with self._lock:
            self._script.append(_Scripted(None, seconds, times, path))

    # -- for subclasses --------------------------------------------------------------------

    def route(self, request: Received) -> Reply:
        raise NotImplementedError

    def error(self, status: int, message: str | None = None) -> Reply:
        """The provider's error reply for ``status`` (``message`` overrides its text)."""
        raise NotImplementedError

    def refuse(self, request: Received, status: int, message: str) -> Reply:
        """Record why a request was refused and answer the provider's error for it."""
        self._note(f"{request.method} {request.path}: {status} {message}")
        return self.error(status, message)

    def accept(self, request: Received) -> None:
        """Record an accepted send."""
        with self._lock:
            self._messages.append(request)

    def _note(self, problem: str) -> None:
        with self._lock:
            self._problems.append(problem)

    def reset_next(self, *, times: int = 1, path: str | None = None) -> None:
        """Read the next ``times`` requests whole (to ``path``), then reset the connection
        without answering: the provider got the request, the client never hears back."""
        with self._lock:
            self._script.append(_Scripted(RESET, 0.0, times, path))

    def _dispatch(self, request: Received) -> Reply | object | None:
        with self._lock:
            self._requests.append(request)
            scripted = next(
                (s for s in self._script if s.path in (None, request.path)),
                None,
            )
            if scripted is not None:
                scripted.times -= 1
                if scripted.times <= 0:
                    self._script.remove(scripted)
        if scripted is not None:
            if scripted.delay and self._stopping.wait(scripted.delay):
                return None
            if isinstance(scripted.reply, tuple):
                return self.error(*scripted.reply)
            if scripted.reply is not None:
                return scripted.reply
        return self.route(request)


def _json_object(request: Received) -> dict[str, Any] | None:
    try:
        data = request.json
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _is_address(text: object) -> bool:
    """A plausible ``addr`` or ``Name <addr>`` (what providers parse before anything else)."""
    if not isinstance(text, str) or "\n" in text or "\r" in text:
        return False
    _, address = email.utils.parseaddr(text)
    return bool(re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", address))


def _bearer(request: Received) -> str | None:
    value = request.headers.get("authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else None


_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _tags_ok(value: object, name: str, content: str) -> bool:
    """SES message tags and Resend tags: a list of ``{name, value}`` whose both parts hold
    only ASCII letters, digits, ``_`` and ``-`` (at most 256), as both document."""
    return (
        isinstance(value, list)
        and all(isinstance(t, dict) and set(t) == {name, content} for t in value)
        and all(
            isinstance(t[k], str) and _TAG.fullmatch(t[k]) for t in value for k in (name, content)
        )
    )


def _string_map(value: object, max_key: int = 10_000, max_value: int = 10_000) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= max_key and len(v) <= max_value
        for k, v in value.items()
    )


def _unknown(data: Mapping[str, Any], allowed: Collection[str]) -> list[str]:
    return sorted(set(data) - set(allowed))


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# -- Postmark -------------------------------------------------------------------------------


class PostmarkFake(FakeProviderServer):
    """Postmark: ``GET /server`` and ``POST /email`` with ``X-Postmark-Server-Token``.

    Checks: the token (401, ErrorCode 10); ``Accept`` and, for POST, ``Content-Type`` are
    ``application/json``; the body is a JSON object with only documented fields; ``From`` and
    each comma-separated ``To`` are addresses (at most 50 recipients); ``Subject`` is text;
    ``TextBody`` or ``HtmlBody`` is present; ``Headers`` is a list of ``{Name, Value}``;
    ``MessageStream`` names one of ``streams``. Refusals are 422 with Postmark's ErrorCodes.
    Answers 200 ``{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}``.
    """

    label = "Postmark"
    FIELDS = (
        "From", "To", "Cc", "Bcc", "Subject", "Tag", "HtmlBody", "TextBody", "ReplyTo",
        "Headers", "TrackOpens", "TrackLinks", "Metadata", "Attachments", "MessageStream",
    )  # fmt: skip
    _ERRORS: ClassVar[dict[int, tuple[int, str]]] = {
        401: (
            10,
            "The Server Token you provided in the X-Postmark-Server-Token request header "
            "was invalid. Please verify that you are using a valid token.",
        ),
        422: (
            406,
            "You tried to send to recipient(s) that have been marked as inactive. Found "
            "inactive addresses: you@example.com. Inactive recipients are ones that have "
            "generated a hard bounce, a spam complaint, or a manual suppression.",
        ),
        429: (429, "Rate limit exceeded. Please slow down your requests."),
        500: (0, "An internal server error occurred."),
        503: (0, "Service unavailable: Postmark is undergoing maintenance."),
    }

    def __init__(
        self,
        server_token: str = "pm-server-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",  # noqa: S107
        *,
        delivery_type: str = "Live",
        streams: Collection[str] = ("outbound", "broadcast"),
        inactive: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.server_token = server_token
        self.delivery_type = delivery_type
        self.streams = tuple(streams)
        #: Recipients Postmark has marked inactive (a hard bounce, a complaint, a manual
        #: suppression): a message to one is refused with ErrorCode 406.
        self.inactive = frozenset(a.lower() for a in inactive)

    def error(self, status: int, message: str | None = None, *, code: int | None = None) -> Reply:
        default_code, default_message = self._ERRORS.get(status, (300, "Invalid email request"))
        return Reply.json(
            status,
            {
                "ErrorCode": default_code if code is None else code,
                "Message": message or default_message,
            },
        )

    def route(self, request: Received) -> Reply:
        if "application/json" not in request.headers.get("accept", ""):
            return self.refuse(request, 422, "Accept must be application/json")
        if request.headers.get("x-postmark-server-token") != self.server_token:
            self._note(f"{request.method} {request.path}: bad or missing server token")
            return self.error(401)
        if (request.method, request.path) == ("GET", "/server"):
            return Reply.json(
                200,
                {
                    "ID": 1234567,
                    "Name": "Fake Server",
                    "ApiTokens": [self.server_token],
                    "Color": "blue",
                    "SmtpApiActivated": True,
                    "DeliveryType": self.delivery_type,
                    "InboundAddress": "0123456789abcdef@inbound.postmarkapp.com",
                },
            )
        if (request.method, request.path) == ("POST", "/email"):
            return self._email(request)
        if (request.method, request.path) == ("POST", "/email/batch"):
            return self._batch(request)
        return self.refuse(request, 404, f"no such endpoint {request.method} {request.path}")

    def _email(self, request: Received) -> Reply:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._refuse_code(request, 409, "JSON required")
        data = _json_object(request)
        if data is None:
            return self._refuse_code(request, 402, "Invalid JSON")
        if unknown := _unknown(data, self.FIELDS):
            return self._refuse_code(request, 403, f"Incompatible JSON: unknown {unknown}")
        if problem := self._problem(data):
            return self._refuse_code(request, 300, problem)
        if problem := self._inactive(data):
            return self._refuse_code(request, 406, problem)
        self.accept(request)
        return Reply.json(200, self._sent(data))

    def _batch(self, request: Received) -> Reply:
        """``POST /email/batch``: a JSON array of ``/email`` bodies (at most 500); 200 with one
        result per message, in order (``ErrorCode`` 0 and a ``MessageID`` for each accepted,
        ``ErrorCode`` 300 and the problem for each refused, 406 for an inactive
        recipient). Each accepted message is recorded
        in ``messages`` as a request of its own (its ``json`` is that message's body)."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            return self._refuse_code(request, 409, "JSON required")
        try:
            items = request.json
        except ValueError:
            items = None
        if not isinstance(items, list) or not 1 <= len(items) <= 500:
            return self._refuse_code(request, 402, "The batch must be a list of 1 to 500 emails")
        results: list[dict[str, Any]] = []
        for item in items:
            problem = (
                "Invalid JSON" if not isinstance(item, dict)
                else f"Incompatible JSON: unknown {u}" if (u := _unknown(item, self.FIELDS))
                else self._problem(item)
            )  # fmt: skip
            code = 300
            if not problem and (problem := self._inactive(item)):
                code = 406
            if problem:
                self._note(f"{request.method} {request.path}: ErrorCode {code} {problem}")
                results.append({"ErrorCode": code, "Message": problem})
                continue
            body = json.dumps(item).encode()
            self.accept(
                Received(request.method, "/email", request.query, request.headers, body, request.at)
            )
            results.append(self._sent(item))
        return Reply.json(200, results)

    def _inactive(self, data: Mapping[str, Any]) -> str | None:
        """Postmark's refusal of a message to an inactive recipient (ErrorCode 406), or None."""
        found = [r.strip() for r in str(data.get("To") or "").split(",")]
        found = [r for r in found if r.lower() in self.inactive]
        if not found:
            return None
        return (
            "You tried to send to recipient(s) that have been marked as inactive. Found "
            f"inactive addresses: {', '.join(found)}. Inactive recipients are ones that have "
            "generated a hard bounce, a spam complaint, or a manual suppression."
        )

    def _problem(self, data: Mapping[str, Any]) -> str | None:
        """Why Postmark would refuse this message body (ErrorCode 300), or None."""
        recipients = [r.strip() for r in str(data.get("To") or "").split(",") if r.strip()]
        problem = None
        if not _is_address(data.get("From")):
            problem = "Invalid 'From' address"
        elif not recipients or not all(_is_address(r) for r in recipients):
            problem = "Invalid 'To' address"
        elif len(recipients) > 50:
            problem = "Maximum of 50 recipients exceeded"
        elif not isinstance(data.get("Subject", ""), str):
            problem = "Subject must be text"
        elif not data.get("TextBody") and not data.get("HtmlBody"):
            problem = "Provide either email TextBody or HtmlBody or both."
        elif "Headers" in data and not _name_value_list(data["Headers"], "Name", "Value"):
            problem = "Headers must be a list of {Name, Value}"
        elif "ReplyTo" in data and not _is_address(data["ReplyTo"]):
            problem = "Invalid 'ReplyTo' address"
        elif "Metadata" in data and not (
            _string_map(data["Metadata"], 20, 80) and len(data["Metadata"]) <= 10
        ):
            problem = "Metadata must be at most 10 string fields (names <= 20, values <= 80)"
        elif data.get("MessageStream", "outbound") not in self.streams:
            problem = f"The message stream {data.get('MessageStream')!r} was not found"
        return problem

    @staticmethod
    def _sent(data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "To": data["To"],
            "SubmittedAt": _now_iso(),
            "MessageID": str(uuid.uuid4()),
            "ErrorCode": 0,
            "Message": "OK",
        }

    def _refuse_code(self, request: Received, code: int, message: str) -> Reply:
        self._note(f"{request.method} {request.path}: ErrorCode {code} {message}")
        return self.error(422, message, code=code)


def _name_value_list(value: object, name: str, content: str) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict)
        and set(item) == {name, content}
        and isinstance(item[name], str)
        and isinstance(item[content], str)
        for item in value
    )


# -- SendGrid -------------------------------------------------------------------------------


class SendGridFake(FakeProviderServer):
    """SendGrid v3: ``GET /v3/scopes`` and ``POST /v3/mail/send`` with ``Bearer <api_key>``.

    Checks: the key (401), ``mail.send`` in ``scopes`` for sending (403 "access forbidden");
    JSON body with only documented fields; ``personalizations`` non-empty, each with a non-empty
    ``to`` list of ``{email[, name]}``; ``from``/``reply_to`` are ``{email[, name]}``;
    ``subject`` text; ``content`` non-empty ``[{type, value}]`` with ``text/plain`` first when
    present; ``headers`` a string map without reserved names; with ``verified_senders`` set,
    ``from.email`` must be one (403, the Sender Identity error). Refusals answer
    ``{"errors": [{"message", "field", "help"}]}``; success 202, empty body, ``X-Message-Id``.
    """

    label = "SendGrid"
    FIELDS = (
        "personalizations", "from", "reply_to", "reply_to_list", "subject", "content",
        "attachments", "template_id", "headers", "categories", "custom_args", "send_at",
        "batch_id", "asm", "ip_pool_name", "mail_settings", "tracking_settings",
    )  # fmt: skip
    RESERVED_HEADERS = frozenset(
        h.lower()
        for h in (
            "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type",
            "Content-Transfer-Encoding", "To", "From", "Subject", "Reply-To", "CC", "BCC",
        )
    )  # fmt: skip
    _MESSAGES: ClassVar[dict[int, str]] = {
        400: "The to array is required for all personalization objects.",
        401: "The provided authorization grant is invalid, expired, or revoked",
        403: "access forbidden",
        413: "The JSON payload you have included in your request is too large.",
        429: "too many requests",
        500: "internal server error",
        503: "service unavailable",
    }

    def __init__(
        self,
        api_key: str = "SG.fake-key-id.fake-key-secret-0123456789abcdef",
        *,
        scopes: Collection[str] = ("mail.send", "sender_verification_eligible"),
        verified_senders: Collection[str] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.scopes = tuple(scopes)
        self.verified_senders = None if verified_senders is None else set(verified_senders)

    def error(self, status: int, message: str | None = None, *, field: str | None = None) -> Reply:
        text = message or self._MESSAGES.get(status, "Bad Request")
        return Reply.json(status, {"errors": [{"message": text, "field": field, "help": None}]})

    def route(self, request: Received) -> Reply:
        if _bearer(request) != self.api_key:
            self._note(f"{request.method} {request.path}: bad or missing API key")
            return self.error(401)
        if (request.method, request.path) == ("GET", "/v3/scopes"):
            return Reply.json(200, {"scopes": list(self.scopes)})
        if (request.method, request.path) == ("POST", "/v3/mail/send"):
            if "mail.send" not in self.scopes:
                return self.refuse(request, 403, "access forbidden")
            return self._send(request)
        return self.refuse(request, 404, "resource not found")

    def _send(self, request: Received) -> Reply:
        data = _json_object(request)
        if data is None:
            return self.refuse(request, 400, "Bad Request: the body must be a JSON object")
        problem = _sendgrid_problem(data, self.FIELDS, self.RESERVED_HEADERS)
        if problem:
            return self.refuse(request, 400, problem)
        sender = data["from"]["email"]
        if self.verified_senders is not None and sender not in self.verified_senders:
            return self.refuse(
                request,
                403,
                "The from address does not match a verified Sender Identity. Mail cannot be "
                "sent until this error is resolved. Visit "
                "https://sendgrid.com/docs/for-developers/sending-email/sender-identity/ to "
                "see the Sender Identity requirements",
            )
        self.accept(request)
        return Reply(202, b"", {"X-Message-Id": secrets.token_urlsafe(16)})


def _sendgrid_problem(
    data: Mapping[str, Any], fields: Collection[str], reserved: Collection[str]
) -> str | None:
    def mailbox_ok(value: object) -> bool:
        return (
            isinstance(value, dict)
            and set(value) <= {"email", "name"}
            and _is_address(value.get("email"))
            and isinstance(value.get("name", ""), str)
        )

    if unknown := _unknown(data, fields):
        return f"Unknown fields: {unknown}"
    personalizations = data.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "The personalizations field is required and must have at least one item."
    for item in personalizations:
        to = item.get("to") if isinstance(item, dict) else None
        if not isinstance(to, list) or not to or not all(mailbox_ok(r) for r in to):
            return "The to array is required for all personalization objects."
    if not mailbox_ok(data.get("from")):
        return "The from object must be provided for every email send."
    if "reply_to" in data and not mailbox_ok(data["reply_to"]):
        return "The reply_to email must be a valid email address."
    if not isinstance(data.get("subject"), str) or not data["subject"]:
        return "The subject is required."
    content = data.get("content")
    if (
        not isinstance(content, list)
        or not content
        or not all(
            isinstance(c, dict)
            and set(c) == {"type", "value"}
            and isinstance(c["value"], str)
            and c["value"]
            for c in content
        )
    ):
        return "The content value must be a string at least one character in length."
    types = [c["type"] for c in content]
    if "text/plain" in types and types[0] != "text/plain":
        return "If present, text/plain must be first, followed by text/html."
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        return "headers must be an object of strings"
    if bad := sorted(k for k in headers if k.lower() in reserved):
        return f"The following headers are reserved and cannot be set: {bad}"
    if "custom_args" in data and not _string_map(data["custom_args"]):
        return "custom_args must be an object of strings"
    return None


# -- Mailgun --------------------------------------------------------------------------------


class MailgunFake(FakeProviderServer):
    """Mailgun v3: ``GET /v3/domains/{domain}`` and ``POST /v3/{domain}/messages`` with HTTP
    Basic auth ``api:<key>``.

    Checks: the key (401, plain text ``Forbidden``); ``sending_key`` (when set) works only
    for ``POST /v3/{domain}/messages``; unknown domains are 404 ``{"message": "Domain not
    found"}``. Messages are a form (urlencoded or multipart) with ``from``, at least one ``to``,
    ``subject``, and ``text`` or ``html``, each an address where it should be; other names
    must be documented ones or ``h:``/``v:``/``o:``/``t:`` prefixed; a sandbox domain only sends
    to ``authorized_recipients`` (403). Refusals answer ``{"message": text}``; success 200
    ``{"id": "<...@domain>", "message": "Queued. Thank you."}``.
    """

    label = "Mailgun"
    FIELDS = (
        "from", "to", "cc", "bcc", "subject", "text", "html", "amp-html", "attachment",
        "inline", "template", "recipient-variables",
    )  # fmt: skip
    _MESSAGES: ClassVar[dict[int, str]] = {
        400: "'to' parameter is not a valid address. please check documentation",
        403: "Forbidden",
        404: "Domain not found",
        429: "Too many requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }

    def __init__(
        self,
        api_key: str = "key-0123456789abcdef0123456789abcdef",
        *,
        domain: str = "mg.example.com",
        domain_state: str = "active",
        domain_type: str = "custom",
        sending_key: str | None = None,
        authorized_recipients: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.domain = domain
        self.domain_state = domain_state
        self.domain_type = domain_type
        self.sending_key = sending_key
        self.authorized_recipients = set(authorized_recipients)

    def error(self, status: int, message: str | None = None) -> Reply:
        if status == 401:
            return Reply.text(401, message or "Forbidden")
        return Reply.json(status, {"message": message or self._MESSAGES.get(status, "Error")})

    def _key(self, request: Received) -> str | None:
        value = request.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:], validate=True).decode().partition(":")
        except ValueError:
            return None
        return password if user == "api" else None

    def route(self, request: Received) -> Reply:
        key = self._key(request)
        messages_path = f"/v3/{self.domain}/messages"
        sending = (request.method, request.path) == ("POST", messages_path)
        if key != self.api_key and not (sending and key and key == self.sending_key):
            self._note(f"{request.method} {request.path}: bad or missing API key")
            return self.error(401)
        if request.method == "GET" and request.path.startswith("/v3/domains/"):
            if request.path != f"/v3/domains/{self.domain}":
                return self.refuse(request, 404, "Domain not found")
            return Reply.json(200, self._domain())
        if sending:
            return self._send(request)
        if request.path.startswith("/v3/") and request.path.endswith("/messages"):
            return self.refuse(request, 404, "Domain not found")
        return self.refuse(request, 404, "Not Found")

    def _domain(self) -> dict[str, Any]:
        return {
            "domain": {
                "name": self.domain,
                "state": self.domain_state,
                "type": self.domain_type,
                "created_at": "Mon, 01 Jan 2024 00:00:00 GMT",
                "smtp_login": f"postmaster@{self.domain}",
                "spam_action": "disabled",
                "wildcard": False,
            },
            "receiving_dns_records": [],
            "sending_dns_records": [],
        }

    def _send(self, request: Received) -> Reply:
        content_type = request.headers.get("content-type", "")
        if request.body and not content_type.startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            return self.refuse(request, 400, "Expected a form, got " + content_type)
        form = request.form
        for name in ("from", "to", "subject"):
            if not form.get(name):
                return self.refuse(request, 400, f"'{name}' parameter is missing")
        if unknown := sorted(
            n for n in form if n not in self.FIELDS and not re.match(r"[hvot]:.", n)
        ):
            return self.refuse(request, 400, f"unknown parameters {unknown}")
        if len(form["from"]) != 1 or not _is_address(form["from"][0]):
            return self.refuse(request, 400, "'from' parameter is not a valid address")
        recipients = [r.strip() for value in form["to"] for r in value.split(",")]
        if not all(_is_address(r) for r in recipients):
            return self.refuse(request, 400, self._MESSAGES[400])
        if not form.get("text") and not form.get("html"):
            return self.refuse(
                request,
                400,
                "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters "
                "specified",
            )
        if "h:Reply-To" in form and not all(_is_address(v) for v in form["h:Reply-To"]):
            return self.refuse(request, 400, "'h:Reply-To' is not a valid address")
        if self.domain_type == "sandbox":
            outsiders = [
                r
                for r in recipients
                if email.utils.parseaddr(r)[1] not in self.authorized_recipients
            ]
            if outsiders:
                return self.refuse(
                    request,
                    403,
                    f"Domain {self.domain} is not allowed to send: Free accounts are for test "
                    "purposes only. Please upgrade or add the address to authorized recipients "
                    "in Account Settings.",
                )
        self.accept(request)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        return Reply.json(
            200,
            {
                "id": f"<{stamp}.{secrets.token_hex(8)}@{self.domain}>",
                "message": "Queued. Thank you.",
            },
        )


# -- Resend ---------------------------------------------------------------------------------


class ResendFake(FakeProviderServer):
    """Resend: ``GET /domains`` and ``POST /emails`` with ``Bearer <api_key>``.

    Checks: the key (401 ``missing_api_key`` without one, 403 ``invalid_api_key`` for a wrong
    one); ``restricted`` keys (Sending access) get 401 ``restricted_api_key`` on ``/domains``.
    Emails: JSON with only documented fields; ``from`` an address; ``to`` an address or a list
    of 1-50; ``subject`` text; ``reply_to`` an address or list; ``headers`` a string map; the
    ``from`` domain must be one of ``domains`` with status ``verified`` (403
    ``validation_error``). Refusals answer ``{"statusCode", "message", "name"}``; success 200
    ``{"id": "<uuid>"}``.
    """

    label = "Resend"
    FIELDS = (
        "from", "to", "subject", "bcc", "cc", "reply_to", "html", "text", "react", "headers",
        "attachments", "tags", "scheduled_at",
    )  # fmt: skip
    _ERRORS: ClassVar[dict[int, tuple[str, str]]] = {
        400: ("validation_error", "We found an error with one or more fields in the request."),
        401: ("missing_api_key", "Missing API key in the authorization header."),
        403: ("invalid_api_key", "API key is invalid"),
        422: ("validation_error", "Invalid `to` field. The email address needs to follow the "
              "`email@example.com` or `Name <email@example.com>` format."),
        429: ("rate_limit_exceeded", "Too many requests. You can only make 2 requests per "
              "second. See rate limit response headers for more information."),
        500: ("application_error", "An unexpected error occurred, please try again later."),
        503: ("application_error", "The service is temporarily unavailable."),
    }  # fmt: skip

    def __init__(
        self,
        api_key: str = "re_FakeKey_0123456789abcdefghijklmnop",
        *,
        restricted: bool = False,
        domains: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.restricted = restricted
        #: domain name -> status ("verified", "pending", "not_started", ...)
        self.domains = dict(domains if domains is not None else {"example.com": "verified"})

    def error(self, status: int, message: str | None = None, *, name: str | None = None) -> Reply:
        default_name, default_message = self._ERRORS.get(
            status, ("validation_error", "We found an error with one or more fields.")
        )
        return Reply.json(
            status,
            {
                "statusCode": status,
                "message": message or default_message,
                "name": name or default_name,
            },
        )

    def _refuse_named(self, request: Received, status: int, name: str, message: str) -> Reply:
        self._note(f"{request.method} {request.path}: {status} {name} {message}")
        return self.error(status, message, name=name)

    def route(self, request: Received) -> Reply:
        key = _bearer(request)
        if not key:
            return self._refuse_named(
                request, 401, "missing_api_key", "Missing API key in the authorization header."
            )
        if key != self.api_key:
            return self._refuse_named(request, 403, "invalid_api_key", "API key is invalid")
        if (request.method, request.path) == ("GET", "/domains"):
            if self.restricted:
                return self._refuse_named(
                    request,
                    401,
                    "restricted_api_key",
                    "This API key is restricted to only send emails",
                )
            return Reply.json(
                200,
                {
                    "object": "list",
                    "has_more": False,
                    "data": [
                        {
                            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                            "name": name,
                            "status": status,
                            "created_at": "2024-01-01 00:00:00.000000+00",
                            "region": "us-east-1",
                        }
                        for name, status in self.domains.items()
                    ],
                },
            )
        if (request.method, request.path) == ("POST", "/emails"):
            return self._send(request)
        return self._refuse_named(
            request, 404, "not_found", "The requested endpoint does not exist."
        )

    def _send(self, request: Received) -> Reply:
        data = _json_object(request)
        if data is None:
            return self._refuse_named(request, 400, "validation_error", "Invalid JSON body")
        if unknown := _unknown(data, self.FIELDS):
            return self._refuse_named(request, 422, "invalid_parameter", f"Unknown {unknown}")
        for name in ("from", "to", "subject"):
            if name not in data:
                return self._refuse_named(
                    request, 422, "missing_required_field", f"Missing `{name}` field."
                )
        to = data["to"] if isinstance(data["to"], list) else [data["to"]]
        reply_to = data.get("reply_to", [])
        reply_to = reply_to if isinstance(reply_to, list) else [reply_to]
        headers = data.get("headers", {})
        problem = None
        if not _is_address(data["from"]):
            problem = ("invalid_from_address", "Invalid `from` field.")
        elif not to or len(to) > 50 or not all(_is_address(r) for r in to):
            problem = ("validation_error", self._ERRORS[422][1])
        elif not isinstance(data["subject"], str):
            problem = ("validation_error", "Invalid `subject` field.")
        elif not all(_is_address(r) for r in reply_to):
            problem = ("validation_error", "Invalid `reply_to` field.")
        elif not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            problem = ("validation_error", "Invalid `headers` field.")
        elif "tags" in data and not _tags_ok(data["tags"], "name", "value"):
            problem = ("validation_error", "Tags may only contain ASCII letters, numbers, _ or -.")
        if problem:
            return self._refuse_named(request, 422, *problem)
        domain = email.utils.parseaddr(data["from"])[1].rpartition("@")[2].lower()
        if self.domains.get(domain) != "verified":
            return self._refuse_named(
                request,
                403,
                "validation_error",
                f"The {domain} domain is not verified. Please, add and verify your domain on "
                "https://resend.com/domains",
            )
        self.accept(request)
        return Reply.json(200, {"id": str(uuid.uuid4())})


# -- SMTP2GO --------------------------------------------------------------------------------


class SMTP2GOFake(FakeProviderServer):
    """SMTP2GO v3: ``POST /v3/stats/email_summary`` and ``POST /v3/email/send``.

    Checks: the key, from the ``X-Smtp2go-Api-Key`` header or the body's ``api_key`` (401);
    ``permissions`` (endpoint paths without ``/v3``; None = all) else 400
    ``ENDPOINT_PERMISSION_DENIED``; every call is a POST with a JSON object. Sends: only
    documented fields; ``sender`` an address; ``to`` a list of 1-100 addresses; ``subject``
    text; ``text_body`` or ``html_body``; ``custom_headers`` a list of ``{header, value}``
    without Content-Type, Content-Transfer-Encoding or MIME-Version. Refusals answer
    ``{"request_id", "data": {"error", "error_code"[, "field_validation_errors"]}}``; success
    200 ``{"request_id", "data": {"succeeded": 1, "failed": 0, "failures": [], "email_id"}}``.
    """

    label = "SMTP2GO"
    FIELDS = (
        "api_key", "sender", "to", "cc", "bcc", "subject", "html_body", "text_body",
        "custom_headers", "attachments", "inlines", "template_id", "template_data",
        "schedule", "fastaccept",
    )  # fmt: skip
    FORBIDDEN_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
    _ERRORS: ClassVar[dict[int, tuple[str, str]]] = {
        400: ("E_ApiResponseCodes.NON_VALIDATING_IN_PAYLOAD", "An error occurred processing "
              "the json data you sent with the request, please make sure the data conforms to "
              "the specification for this call and try again."),
        401: ("E_ApiResponseCodes.API_KEY_INVALID", "Invalid API key"),
        403: ("E_ApiResponseCodes.FORBIDDEN", "The API key doesn't have permission to "
              "perform the request"),
        429: ("E_ApiResponseCodes.REQ_LIMIT_EXCEEDED", "Too many requests"),
        500: ("E_ApiResponseCodes.API_EXCEPTION", "An internal error occurred"),
        503: ("E_ApiResponseCodes.API_EXCEPTION", "Service unavailable"),
    }  # fmt: skip

    def __init__(
        self,
        api_key: str = "api-0123456789ABCDEF0123456789ABCDEF",
        *,
        permissions: Collection[str] | None = None,
        cycle_remaining: int = 9990,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.permissions = None if permissions is None else set(permissions)
        self.cycle_remaining = cycle_remaining

    def error(
        self,
        status: int,
        message: str | None = None,
        *,
        error_code: str | None = None,
        field_errors: Mapping[str, str] | None = None,
    ) -> Reply:
        default_code, default_message = self._ERRORS.get(status, self._ERRORS[400])
        data: dict[str, Any] = {
            "error": message or default_message,
            "error_code": error_code or default_code,
        }
        if field_errors:
            data["field_validation_errors"] = dict(field_errors)
        return Reply.json(status, {"request_id": str(uuid.uuid4()), "data": data})

    def _invalid(self, request: Received, fieldname: str, message: str) -> Reply:
        self._note(f"{request.method} {request.path}: {fieldname}: {message}")
        return self.error(400, field_errors={"fieldname": fieldname, "message": message})

    def route(self, request: Received) -> Reply:
        data = _json_object(request)
        if request.method != "POST" or data is None:
            return self.refuse(request, 400, "Every call is a POST with a JSON object")
        key = request.headers.get("x-smtp2go-api-key") or data.get("api_key")
        if key != self.api_key:
            self._note(f"{request.method} {request.path}: bad or missing API key")
            return self.error(401)
        endpoint = request.path.removeprefix("/v3")
        if endpoint not in ("/stats/email_summary", "/email/send"):
            return self.refuse(request, 404, "The requested resource doesn't exist")
        if self.permissions is not None and endpoint not in self.permissions:
            self._note(f"{request.method} {request.path}: endpoint not permitted")
            return self.error(
                400,
                "You do not have permission to access this API endpoint",
                error_code="E_ApiResponseCodes.ENDPOINT_PERMISSION_DENIED",
            )
        if endpoint == "/stats/email_summary":
            return Reply.json(
                200,
                {
                    "request_id": str(uuid.uuid4()),
                    "data": {
                        "cycle_start": "2024-01-01 00:00:00+00:00",
                        "cycle_end": "2024-01-31 00:00:00+00:00",
                        "cycle_used": 10000 - self.cycle_remaining,
                        "cycle_remaining": self.cycle_remaining,
                        "cycle_max": 10000,
                        "email_count": 10000 - self.cycle_remaining,
                        "bounce_percent": "0.00",
                        "spam_percent": "0.00",
                        "unsubscribe_percent": "0.0",
                    },
                },
            )
        return self._send(request, data)

    def _send(self, request: Received, data: Mapping[str, Any]) -> Reply:
        if unknown := _unknown(data, self.FIELDS):
            return self._invalid(request, unknown[0], "is not a field of this call")
        if not _is_address(data.get("sender")):
            return self._invalid(
                request,
                "sender",
                "The field 'sender' was expecting a valid RFC-822 formatted email field but "
                f"found {data.get('sender')!r}",
            )
        to = data.get("to")
        if not isinstance(to, list) or not 1 <= len(to) <= 100 or not all(map(_is_address, to)):
            return self._invalid(request, "to", "expected a list of 1-100 RFC-822 addresses")
        if not isinstance(data.get("subject"), str):
            return self._invalid(request, "subject", "expected a string")
        if not data.get("text_body") and not data.get("html_body"):
            return self._invalid(request, "text_body", "Either html_body or text_body is required")
        headers = data.get("custom_headers", [])
        if not _name_value_list(headers, "header", "value"):
            return self._invalid(request, "custom_headers", "expected [{header, value}]")
        if bad := [h["header"] for h in headers if h["header"].lower() in self.FORBIDDEN_HEADERS]:
            return self._invalid(request, "custom_headers", f"header {bad[0]} is not allowed")
        self.accept(request)
        return Reply.json(
            200,
            {
                "request_id": str(uuid.uuid4()),
                "data": {
                    "succeeded": 1,
                    "failed": 0,
                    "failures": [],
                    "email_id": "-".join(secrets.token_hex(n) for n in (3, 3, 2)),
                },
            },
        )


# -- Amazon SES -----------------------------------------------------------------------------


def _aws_encode(text: str, safe: str = "") -> str:
    return quote(text, safe="-_.~" + safe)


class SESFake(FakeProviderServer):
    """Amazon SES API v2: ``GET /v2/email/account`` and ``POST /v2/email/outbound-emails``,
    authenticated with AWS Signature Version 4.

    The signature is recomputed here from what arrived (method, path, query, the signed
    headers' values, the body bytes), independently of the connector's signer: unknown key id
    -> 403 ``UnrecognizedClientException``; scope not ``<date>/<region>/ses/aws4_request``,
    ``host``/``x-amz-date`` unsigned, or a mismatch -> 403 ``InvalidSignatureException``;
    ``x-amz-date`` more than 15 minutes off -> 403 ``InvalidSignatureException`` "Signature
    expired". SendEmail: JSON with only documented fields; ``FromEmailAddress`` an address;
    ``Destination`` with at least one recipient; ``Content.Simple`` only (``Subject`` and
    ``Body.Text``/``Body.Html`` as ``{Data[, Charset]}``, ``Headers`` at most 15 ``{Name,
    Value}``); ``ReplyToAddresses`` a list of addresses. Errors carry ``X-Amzn-ErrorType`` and
    ``{"message"}``; success 200 ``{"MessageId"}``.
    """

    label = "Amazon SES"
    FIELDS = (
        "FromEmailAddress", "FromEmailAddressIdentityArn", "Destination", "ReplyToAddresses",
        "FeedbackForwardingEmailAddress", "FeedbackForwardingEmailAddressIdentityArn",
        "Content", "EmailTags", "ConfigurationSetName", "ListManagementOptions", "EndpointId",
        "TenantName",
    )  # fmt: skip
    _ERRORS: ClassVar[dict[int, tuple[str, str]]] = {
        400: ("MessageRejected", "Email address is not verified. The following identities "
              "failed the check in region US-EAST-1: you@example.com"),
        403: ("UnrecognizedClientException", "The security token included in the request is "
              "invalid."),
        404: ("NotFoundException", "Resource not found"),
        429: ("TooManyRequestsException", "Maximum sending rate exceeded."),
        500: ("InternalFailure", "The request processing has failed because of an unknown "
              "error, exception or failure."),
        503: ("ServiceUnavailable", "Service is unable to handle request."),
    }  # fmt: skip
    _AUTH = re.compile(
        r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>[^,]+), "
        r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
    )

    def __init__(
        self,
        access_key_id: str = "AKIAFAKEFAKEFAKE0001",
        secret_access_key: str = "fakeSecretKey/0123456789+abcdefghijklmnopqr",  # noqa: S107
        *,
        region: str = "us-east-1",
        production_access: bool = True,
        sending_enabled: bool = True,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__()
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.production_access = production_access
        self.sending_enabled = sending_enabled
        self.clock = clock

    def error(self, status: int, message: str | None = None, *, kind: str | None = None) -> Reply:
        default_kind, default_message = self._ERRORS.get(
            status, ("BadRequestException", "The input you provided is invalid.")
        )
        kind = kind or default_kind
        return Reply.json(
            status,
            {"message": message or default_message},
            {"X-Amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"},
        )

    def _refuse_kind(self, request: Received, status: int, kind: str, message: str) -> Reply:
        self._note(f"{request.method} {request.path}: {status} {kind} {message}")
        return self.error(status, message, kind=kind)

    def signature_problem(self, request: Received) -> tuple[str, str] | None:
        """(error type, message) when the request's SigV4 signature does not hold."""
        match = self._AUTH.fullmatch(request.headers.get("authorization", ""))
        if not match:
            return "IncompleteSignatureException", "Authorization header is missing or malformed"
        if match["key"] != self.access_key_id:
            return "UnrecognizedClientException", self._ERRORS[403][1]
        amz_date = request.headers.get("x-amz-date", "")
        signed = match["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed or not amz_date:
            return "InvalidSignatureException", "host and x-amz-date must be signed"
        if match["scope"] != f"{amz_date[:8]}/{self.region}/ses/aws4_request":
            return "InvalidSignatureException", "Credential should be scoped to a valid region"
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return "InvalidSignatureException", "x-amz-date is not YYYYMMDD'T'HHMMSS'Z'"
        if abs(self.clock() - when) > dt.timedelta(minutes=15):
            return "InvalidSignatureException", f"Signature expired: {amz_date} is now too old"
        if any(name not in request.headers for name in signed):
            return "InvalidSignatureException", "a signed header is missing"
        pairs = sorted(
            (_aws_encode(k), _aws_encode(v))
            for k, v in parse_qsl(request.query, keep_blank_values=True)
        )
        canonical = "\n".join(
            [
                request.method,
                _aws_encode(request.path, "/"),
                "&".join(f"{k}={v}" for k, v in pairs),
                "".join(f"{n}:{' '.join(request.headers[n].split())}\n" for n in sorted(signed)),
                ";".join(sorted(signed)),
                hashlib.sha256(request.body).hexdigest(),
            ]
        )
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                match["scope"],
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + self.secret_access_key).encode()
        for part in match["scope"].split("/"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match["signature"]):
            return (
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details.",
            )
        return None

    def route(self, request: Received) -> Reply:
        problem = self.signature_problem(request)
        if problem:
            return self._refuse_kind(request, 403, *problem)
        if (request.method, request.path) == ("GET", "/v2/email/account"):
            return Reply.json(
                200,
                {
                    "DedicatedIpAutoWarmupEnabled": False,
                    "EnforcementStatus": "HEALTHY",
                    "ProductionAccessEnabled": self.production_access,
                    "SendQuota": {
                        "Max24HourSend": 50000.0 if self.production_access else 200.0,
                        "MaxSendRate": 14.0 if self.production_access else 1.0,
                        "SentLast24Hours": float(len(self.messages)),
                    },
                    "SendingEnabled": self.sending_enabled,
                },
            )
        if (request.method, request.path) == ("POST", "/v2/email/outbound-emails"):
            return self._send(request)
        return self._refuse_kind(request, 404, "NotFoundException", "Unknown operation")

    def _send(self, request: Received) -> Reply:
        data = _json_object(request)
        if data is None:
            return self._refuse_kind(request, 400, "SerializationException", "Invalid JSON")
        problem = _ses_problem(data, self.FIELDS)
        if problem:
            return self._refuse_kind(request, 400, "BadRequestException", problem)
        if not self.sending_enabled:
            return self._refuse_kind(
                request, 400, "SendingPausedException", "Sending is paused for this account."
            )
        self.accept(request)
        return Reply.json(
            200, {"MessageId": f"0100018c{secrets.token_hex(12)}-{uuid.uuid4()}-000000"}
        )


def _ses_problem(data: Mapping[str, Any], fields: Collection[str]) -> str | None:
    def content_ok(value: object) -> bool:
        return (
            isinstance(value, dict)
            and set(value) <= {"Data", "Charset"}
            and isinstance(value.get("Data"), str)
            and isinstance(value.get("Charset", ""), str)
        )

    def addresses_ok(value: object) -> bool:
        return isinstance(value, list) and all(_is_address(a) for a in value)

    if unknown := _unknown(data, fields):
        return f"Unknown fields {unknown}"
    if not _is_address(data.get("FromEmailAddress")):
        return "FromEmailAddress must be an email address"
    destination = data.get("Destination")
    if not isinstance(destination, dict) or set(destination) - {
        "ToAddresses", "CcAddresses", "BccAddresses"
    }:  # fmt: skip
        return "Destination must have ToAddresses, CcAddresses or BccAddresses"
    if not all(addresses_ok(v) for v in destination.values()) or not any(destination.values()):
        return "Destination must name at least one recipient"
    if "ReplyToAddresses" in data and not addresses_ok(data["ReplyToAddresses"]):
        return "ReplyToAddresses must be a list of email addresses"
    content = data.get("Content")
    if not isinstance(content, dict) or set(content) != {"Simple"}:
        return "Content must hold exactly one of Simple, Raw, Template (this fake: Simple)"
    simple = content["Simple"]
    if not isinstance(simple, dict) or set(simple) - {"Subject", "Body", "Headers", "Attachments"}:
        return "Content.Simple takes Subject, Body, Headers, Attachments"
    if not content_ok(simple.get("Subject")):
        return "Content.Simple.Subject must be {Data, Charset}"
    body = simple.get("Body")
    if (
        not isinstance(body, dict)
        or not body
        or set(body) - {"Text", "Html"}
        or not all(content_ok(v) for v in body.values())
    ):
        return "Content.Simple.Body must have Text and/or Html as {Data, Charset}"
    headers = simple.get("Headers", [])
    if not _name_value_list(headers, "Name", "Value") or len(headers) > 15:
        return "Content.Simple.Headers must be at most 15 {Name, Value}"
    if "EmailTags" in data and not _tags_ok(data["EmailTags"], "Name", "Value"):
        return "EmailTags must be {Name, Value} of ASCII letters, numbers, _ or -"
    return None
