"""Any SMTP relay, through FluxMail's public API: connect-time verification and sending.

A client holds one FluxMail pool (:meth:`FluxMail.pool`), made on first send and shared by
every thread of the worker process (the pool is thread-safe): connections stay warm between
messages, at most :data:`MAX_CONNECTIONS` at once. FluxMail's own retries are off
(``max_retries=0``): the worker owns retries, and a message whose content reached the relay
before the connection broke (FluxMail's :class:`~fluxmail.Unconfirmed`) must never be resent
behind the ledger's back.

Outcomes (see :class:`~getfluxly_server.delivery.base.Outcome`): a 2xx final reply is
ACCEPTED (recipients refused at RCPT are listed in ``refused``); a 4xx reply, a refused or
broken connection before the message went out, a DNS failure or a timeout is TRANSIENT; a 5xx
reply, every recipient refused permanently, a failed login or TLS setup is PERMANENT; a
connection lost (or a reply not received in time) after the content was sent is UNKNOWN.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fluxmail import (
    AuthError,
    EmailInstance,
    FluxMail,
    FluxMailException,
    MessageTemplate,
    RecipientsRefused,
    SendResult,
    SMTPPool,
    SMTPReplyError,
    TLSError,
    Unconfirmed,
)
from getfluxly_server.delivery.base import (
    MESSAGE_ID_HEADER,
    BuildContext,
    ClientBase,
    DeliveryError,
    DeliveryResult,
    Field,
    Outcome,
    OutgoingEmail,
    ProviderKind,
    check_hostname,
    is_public_host,
)
from getfluxly_server.delivery.sender import sender_mailbox

#: Connections one worker process keeps open to one relay at most.
MAX_CONNECTIONS = 4
#: Messages a deliver_many() call pipelines down one connection at a time at most.
BATCH_SIZE = 50
#: A warm connection unused for this long is closed instead of reused (relays drop idle
#: sessions after a minute or so; reusing one that was dropped costs a failed attempt).
IDLE_TIMEOUT = 30.0

#: What to try, in the API's own terms, where FluxMail's message (which speaks of its own
#: parameters) is not the right thing to show.
REPLACE = {
    "starttls_not_advertised": "The relay does not offer STARTTLS on this port; switch "
    "smtp_secure to ssl (usually port 465), or use the relay's STARTTLS port (usually 587)",
    "auth_requires_tls": "The relay would only let us log in without encryption; use "
    "smtp_secure starttls or ssl",
}
#: What to try, where FluxMail's own message does not already say it.
ADVICE = {
    "tls_failed": "The port may expect the other TLS mode (starttls on 587, ssl on 465), or "
    "the relay's certificate is not trusted",
    "timeout": "Check the host and port, and whether an egress firewall drops the traffic "
    "(many networks block 25 and 587; try 2525)",
}
_CODE = {
    "connection_failed": "connection_refused",
    "connection_lost": "connection_refused",
    "auth_unsupported": "auth_failed",
    "auth_requires_tls": "auth_failed",
    "smtp_permanent": "rejected",
    "recipients_refused": "rejected",
    "smtp_transient": "deferred",
}
_TRANSIENT = {"connection_refused", "connection_failed", "connection_lost", "timeout",
              "dns_failed"}  # fmt: skip
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)


def _error(exc: FluxMailException) -> DeliveryError:
    """The DeliveryError (code, detail, outcome) for what FluxMail raised or settled."""
    cause = exc.__cause__ if isinstance(exc.__cause__, FluxMailException) else exc
    if isinstance(exc, Unconfirmed) or isinstance(cause, Unconfirmed):
        return DeliveryError(
            "delivery_unknown",
            f"{cause}. The relay may have accepted the message, so it is not sent again "
            "automatically",
            outcome=Outcome.UNKNOWN,
        )
    code = cause.code or "send_failed"
    advice = ADVICE.get(code)
    detail = REPLACE.get(code) or (f"{cause}. {advice}" if advice else str(cause))
    if isinstance(cause, SMTPReplyError):
        refused = (
            {a: str(r) for a, r in cause.refused.items()}
            if isinstance(cause, RecipientsRefused)
            else {}
        )
        return DeliveryError(
            _CODE.get(code, code),
            detail,
            outcome=Outcome.TRANSIENT if cause.transient else Outcome.PERMANENT,
            reply=str(cause.reply),
            refused=refused,
        )
    if isinstance(cause, AuthError | TLSError):
        return DeliveryError(_CODE.get(code, code), detail, outcome=Outcome.PERMANENT)
    return DeliveryError(_CODE.get(code, code), detail, transient=code in _TRANSIENT)


def _result(outcome: object, data: bytes, elapsed_ms: int) -> DeliveryResult:
    """The DeliveryResult for what the pool settled one message with."""
    if isinstance(outcome, DeliveryError):
        return outcome.result(elapsed_ms)
    if isinstance(outcome, FluxMailException):
        return _error(outcome).result(elapsed_ms)
    assert isinstance(outcome, SendResult)
    found = _MESSAGE_ID.search(data.split(b"\r\n\r\n", 1)[0])
    return DeliveryResult(
        provider_message_id=outcome.queue_id,
        reply=str(outcome.reply),
        elapsed_ms=elapsed_ms,
        accepted=outcome.accepted,
        refused={address: str(reply) for address, reply in outcome.refused.items()},
        smtp_message_id=found.group(1).decode("ascii", "replace") if found else None,
    )


class _Raw(str):
    """Text MessageTemplate must put into the HTML part as it is (it escapes everything
    else, as markupsafe does for any object without ``__html__``)."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


#: Compiled message templates a client keeps (by sender, reply-to and custom headers):
#: compiling one costs about ten times what filling it in does.
MAX_TEMPLATES = 64
#: Headers whose value differs per message (marketing mail's signed unsubscribe link),
#: written on a line of their own in front of the template's block, as the message id is:
#: kept in the template they would compile one per message (and FluxMail keeps
#: List-Unsubscribe to its own https-only argument).
PER_MESSAGE = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
#: RFC 5322 2.1.1: no line longer than this (the URL in List-Unsubscribe cannot be folded).
MAX_LINE = 998


class Renderer:
    """Builds the wire bytes of messages with FluxMail's MessageTemplate, keeping the compiled
    template of each sender/reply-to/headers combination. Thread-safe.

    The subject and bodies are data here, never template source: each is a single
    placeholder filled with the text as given. The GetFluxly message id header differs per
    message, so it is not part of the template: its line (``[A-Za-z0-9_-]`` only, checked by
    OutgoingEmail) is put in front of the rendered header block.
    """

    def __init__(self, max_templates: int = MAX_TEMPLATES) -> None:
        self.max_templates = max_templates
        self._lock = threading.Lock()
        self._templates: OrderedDict[tuple[Any, ...], MessageTemplate] = OrderedDict()

    def _template(self, email: OutgoingEmail, text: bool, html: bool) -> MessageTemplate:
        headers = tuple(
            (k, v)
            for k, v in email.headers.items()
            if k.lower() != MESSAGE_ID_HEADER.lower() and k.lower() not in PER_MESSAGE
        )
        key = (email.from_name, email.from_email, email.reply_to, headers, text, html)
        with self._lock:
            template = self._templates.get(key)
            if template is not None:
                self._templates.move_to_end(key)
                return template
        template = MessageTemplate(
            sender=sender_mailbox(email.from_email, email.from_name),
            subject="{{ subject }}",
            text="{{ text }}" if text else None,
            html="{{ html }}" if html else None,
            reply_to=email.reply_to,
            headers=dict(headers),
        )
        with self._lock:
            self._templates[key] = template
            while len(self._templates) > self.max_templates:
                self._templates.popitem(last=False)
        return template

    def render(self, email: OutgoingEmail) -> tuple[Any, bytes]:
        """The envelope and wire bytes of ``email``; raises FluxMailException on bad input."""
        text = email.text if email.text is not None or email.html is not None else ""
        template = self._template(email, text is not None, email.html is not None)
        envelope, data = template.render(
            list(email.to), subject=email.subject, text=text, html=_Raw(email.html or "")
        )
        own = [(k, v) for k, v in email.headers.items() if k.lower() in PER_MESSAGE]
        if email.message_id is not None:
            own.insert(0, (MESSAGE_ID_HEADER, email.message_id))
        lines = [f"{name}: {value}\r\n" for name, value in own]
        for line in lines:
            if not line[:-2].isascii() or not line[:-2].isprintable() or len(line) > MAX_LINE:
                raise FluxMailException(
                    f"header {line.partition(':')[0]} must be one line of printable ASCII "
                    f"of at most {MAX_LINE} characters", "invalid_params",
                )  # fmt: skip
        return envelope, "".join(lines).encode("ascii") + data


class SMTPProvider(ClientBase):
    """A relay reached over SMTP with ``smtp_secure`` = starttls | ssl | none."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self.host = check_hostname(str(config["smtp_host"]), "smtp_host")
        self.port = int(config["smtp_port"])
        self.secure = str(config["smtp_secure"])
        self.context = context
        self._mailer = FluxMail(
            "smtp",
            EmailInstance(self.host),  # never FluxMail's "host:port" syntax: IPv6 stays whole
            port=self.port,
            username=str(config["username"]),
            password=secrets["password"],
            use_tls=self.secure == "starttls",
            use_ssl=self.secure == "ssl",
            timeout=context.timeout,
            # "none" is the operator's explicit choice for a trusted in-house relay.
            allow_plaintext_auth=self.secure == "none",
            # The multi-tenant guard checks the resolved address at connect time (None: off).
            resolve=context.network.smtp_resolver(),
        )
        self._pool: SMTPPool | None = None
        self._renderer = Renderer()
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"SMTPProvider(host={self.host!r}, port={self.port}, secure={self.secure!r})"

    def verify(self) -> list[str]:
        warnings = []
        if self.secure == "none" and is_public_host(self.host):
            warnings.append(
                f"{self.host} is a public host and smtp_secure is none: the password and every "
                "message cross the internet unencrypted; use starttls or ssl"
            )
        try:
            self._mailer.test_connection()
        except FluxMailException as exc:
            raise _error(exc) from exc
        return warnings

    def _connections(self) -> SMTPPool:
        with self._lock:
            if self._closed:
                raise DeliveryError(
                    "connection_refused", "This provider's client was closed", transient=True
                )
            if self._pool is None:
                self._pool = self._mailer.pool(
                    max_connections=MAX_CONNECTIONS,
                    idle_timeout=IDLE_TIMEOUT,
                    batch_size=BATCH_SIZE,
                )
            return self._pool

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        [result] = self.deliver_many([email])
        if not result.ok:
            raise DeliveryError(
                result.code or "send_failed",
                result.detail,
                outcome=result.outcome,
                reply=result.reply,
                refused=result.refused,
            )
        return result

    def deliver(self, email: OutgoingEmail) -> DeliveryResult:
        [result] = self.deliver_many([email])
        return result

    def deliver_many(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        """Several messages down the pool's warm connections, pipelined (one round trip per
        message where the relay offers PIPELINING); one result per message, in order. Only
        the message whose content was in flight when a connection broke is UNKNOWN; those
        not yet sent are TRANSIENT."""
        started = time.perf_counter()
        results: list[DeliveryResult | None] = [None] * len(emails)
        items, positions = [], []
        for index, email in enumerate(emails):
            try:
                items.append(self._with_return_path(email, *self._renderer.render(email)))
                positions.append(index)
            except FluxMailException as exc:
                error = DeliveryError("rejected", f"The message cannot be sent: {exc}")
                results[index] = error.result()
        if items:
            outcomes: Sequence[object]
            if self.context.keep_connections:
                try:
                    outcomes = self._connections().send_many(items)
                except DeliveryError as exc:  # the client was closed
                    outcomes = [exc] * len(items)
            else:  # a client used once: nothing may stay open after it
                with self._mailer.pool(max_connections=1, batch_size=BATCH_SIZE) as pool:
                    outcomes = pool.send_many(items)
            elapsed = round((time.perf_counter() - started) * 1000)
            for index, (_, data), outcome in zip(positions, items, outcomes, strict=True):
                results[index] = _result(outcome, data, elapsed)
        return [r for r in results if r is not None]

    def _with_return_path(self, email: OutgoingEmail, envelope: Any, data: bytes) -> Any:
        """The bounce mailbox's VERP: with a bounce domain configured, a ledger message's
        envelope sender (MAIL FROM, where every MTA sends its DSN) becomes
        ``bounces+<message id>@<domain>``; the From header is left as it is. Test sends
        (no message id) keep the From address."""
        domain = self.context.bounce_domain
        if domain is None or email.message_id is None:
            return envelope, data
        return replace(envelope, sender=f"bounces+{email.message_id}@{domain}"), data

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.close()  # connections still sending close when their send ends


SMTP = ProviderKind(
    name="smtp",
    label="Custom SMTP",
    fields=(
        Field("smtp_host"),
        Field("smtp_port", int, low=1, high=65535),
        Field("smtp_secure", choices=("starttls", "ssl", "none")),
        Field("username"),
        Field("password", secret=True),
    ),
    build=SMTPProvider,
)
