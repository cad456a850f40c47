"""The narrow interface every email provider implements, and what flows through it."""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from getfluxly_server.delivery.netguard import NetworkPolicy

#: The header that carries GetFluxly's message id on every outgoing message, so feedback can
#: be joined back to the ledger.
MESSAGE_ID_HEADER = "X-GetFluxly-Message-Id"
#: The name it has in each HTTP provider's metadata field (SES message tags, Resend tags,
#: Mailgun ``v:`` variables, Postmark Metadata, SendGrid custom_args; SMTP2GO, which has none,
#: reports custom headers).
MESSAGE_ID_FIELD = "getfluxly_message_id"
# What every provider's metadata field accepts (SES and Resend tags are the strictest).
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


@dataclass(frozen=True)
class OutgoingEmail:
    """One message to one or more recipients, as the platform hands it to a provider.

    ``message_id`` is GetFluxly's id for the message (``msg_...``, the ledger's key): every
    provider sends it in the :data:`MESSAGE_ID_HEADER` header and, on HTTP APIs, in the
    provider's own metadata field. ``idempotency_key`` identifies the send for the ledger's
    retries (derived from where the message came from); providers that take such a key may
    pass it on. Both are optional only for test sends, which have no ledger entry.
    """

    from_email: str
    to: tuple[str, ...]
    subject: str
    text: str | None = None
    html: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if self.message_id is not None and not _MESSAGE_ID.fullmatch(self.message_id):
            raise ValueError("message_id must be 1-200 of A-Z a-z 0-9 _ -")

    def all_headers(self) -> dict[str, str]:
        """``headers`` plus the GetFluxly message id header (when there is an id)."""
        merged = {k: v for k, v in self.headers.items() if k.lower() != MESSAGE_ID_HEADER.lower()}
        if self.message_id is not None:
            merged[MESSAGE_ID_HEADER] = self.message_id
        return merged


class Outcome(enum.Enum):
    """What a delivery attempt means for the message, and so for the worker's retry.

    - ``ACCEPTED``: the relay or API took it (some recipients may be refused: see
      :attr:`DeliveryResult.refused`) -> ``sent``.
    - ``TRANSIENT``: it was not taken, and trying later may work (an SMTP 4xx, an HTTP 408,
      429 or 5xx, a timeout or network failure before the message was handed over) ->
      ``deferred``, retried with backoff.
    - ``PERMANENT``: it was refused and will be again (an SMTP 5xx, another HTTP 4xx, bad
      credentials, a message the provider cannot take) -> ``failed`` at once.
    - ``UNKNOWN``: the connection was lost (or the answer did not come in time) after the
      message was handed over and before the answer: it may have been taken ->
      ``unknown``, never resent automatically (only by hand).
    """

    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    UNKNOWN = "unknown"

    @property
    def retry(self) -> bool:
        """Whether the worker may try the message again by itself."""
        return self is Outcome.TRANSIENT

    @property
    def status(self) -> str:
        """The ledger status this outcome gives a message (engine spec section 2)."""
        return _STATUS[self]


_STATUS = {
    Outcome.ACCEPTED: "sent",
    Outcome.TRANSIENT: "deferred",
    Outcome.PERMANENT: "failed",
    Outcome.UNKNOWN: "unknown",
}


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of one delivery attempt.

    ``reply`` is the relay's final reply (SMTP) or the HTTP status line; ``provider_message_id``
    the relay's queue id or the API's message id; ``smtp_message_id`` the Message-ID header
    when GetFluxly wrote the message itself (SMTP). For anything but ACCEPTED, ``code`` is the
    contract's error code (``rejected``, ``deferred``, ``timeout``, ``connection_refused``...)
    and ``detail`` says what happened and what to try. ``refused`` maps each refused recipient
    to the reply that refused it (a partial refusal is still ACCEPTED). ``retry_after`` is the
    provider's own wait in seconds, when it gave one (HTTP ``Retry-After``).
    """

    provider_message_id: str | None
    reply: str
    elapsed_ms: int
    outcome: Outcome = Outcome.ACCEPTED
    code: str | None = None
    detail: str = ""
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    smtp_message_id: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


class DeliveryError(Exception):
    """The provider refused or could not be reached. ``code`` is from the contract
    (connection_refused, auth_failed, starttls_not_advertised, tls_failed, timeout,
    dns_failed, rejected, ...); ``outcome`` says what it means for the message
    (TRANSIENT when ``transient``, else PERMANENT, unless given)."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        transient: bool = False,
        field: str | None = None,
        outcome: Outcome | None = None,
        reply: str = "",
        retry_after: float | None = None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.outcome = outcome or (Outcome.TRANSIENT if transient else Outcome.PERMANENT)
        self.transient = self.outcome is Outcome.TRANSIENT
        #: The API field at fault, for validation errors.
        self.field = field
        self.reply = reply
        self.retry_after = retry_after
        self.refused = dict(refused or {})

    def result(self, elapsed_ms: int = 0) -> DeliveryResult:
        """This failure as a :class:`DeliveryResult` (what :meth:`ProviderClient.deliver`
        returns)."""
        return DeliveryResult(
            provider_message_id=None,
            reply=self.reply,
            elapsed_ms=elapsed_ms,
            outcome=self.outcome,
            code=self.code,
            detail=self.detail,
            refused=self.refused,
            retry_after=self.retry_after,
        )


class ProviderClient(Protocol):
    """What the platform needs of a provider. Implementations hold no database state.

    A client may be kept and shared by the threads of a worker process (see
    :mod:`getfluxly_server.delivery.clients`): every method is thread-safe.
    """

    def verify(self) -> list[str]:
        """Check the credentials and connection without sending; returns warnings.

        Raises DeliveryError naming the first failure.
        """
        ...

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        """Hand one message to the provider; returns an ACCEPTED result, raises DeliveryError
        (whose ``outcome`` classifies it) otherwise. For callers that report failures to a
        person (the test send)."""
        ...

    def deliver(self, email: OutgoingEmail) -> DeliveryResult:
        """Hand one message to the provider; never raises for a delivery failure: the result's
        ``outcome`` says what happened (for workers)."""
        ...

    def deliver_many(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        """:meth:`deliver` for several messages, one result per message in order (SMTP
        pipelines them down its warm connections; others send one after the other)."""
        ...

    def close(self) -> None:
        """Release connections; a send still running finishes first. Idempotent."""
        ...

    def __enter__(self) -> Self:
        """``with client:`` closes it at the end."""
        ...

    def __exit__(self, *exc_info: object) -> None: ...


class ClientBase:
    """What every provider client shares: :meth:`deliver` from :meth:`send`, a no-op close,
    and ``with client:`` closing it."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        raise NotImplementedError

    def deliver(self, email: OutgoingEmail) -> DeliveryResult:
        try:
            return self.send(email)
        except DeliveryError as exc:
            return exc.result()

    def deliver_many(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        return [self.deliver(email) for email in emails]

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Field:
    """One setting a provider takes in the API body."""

    name: str
    kind: type = str
    required: bool = True
    secret: bool = False
    choices: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class ProviderKind:
    """A provider type: its settings, and how to build a client from stored settings."""

    name: str
    label: str
    fields: tuple[Field, ...]
    #: build(config, secrets, context) -> client
    build: Callable[[Mapping[str, Any], Mapping[str, str], BuildContext], ProviderClient]

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)


@dataclass(frozen=True)
class BuildContext:
    """What the composition root lends adapters: timeouts and the network policy."""

    timeout: float = 15.0
    #: Where provider connections may go (GETFLUXLY_MULTI_TENANT_GUARD and its allow-list).
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    #: Keep connections open between sends (until close()): for clients a
    #: :class:`~getfluxly_server.delivery.clients.ClientCache` holds. Off, every call opens
    #: and closes its own, so a client used once and dropped leaves nothing open.
    keep_connections: bool = False
    #: GETFLUXLY_BOUNCE_DOMAIN: SMTP providers send ledger messages with the VERP envelope
    #: sender ``bounces+<message id>@<bounce_domain>``, so the bounce mailbox
    #: (``domain/bounce_mailbox``) can tell which message a DSN is about (None: the envelope
    #: sender is the From address, as before).
    bounce_domain: str | None = None

    @property
    def block_private_networks(self) -> bool:
        """Whether the multi-tenant guard is on."""
        return self.network.guard


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_hostname(host: str, field: str) -> str:
    """A DNS name or an IP literal (IPv6 without brackets), nothing else: no port, no path.

    Raises DeliveryError(validation_error) naming ``field``.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise DeliveryError(
            "validation_error",
            f"{field} must be a host name or IP address (no port: that is smtp_port)",
            field=field,
        )
    return host


def is_public_host(host: str) -> bool:
    """Whether ``host`` is a public address or name (for plaintext warnings)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the short IPv4 forms the resolver accepts too ("127.1", "0x7f.1")
            address = ipaddress.ip_address(socket.inet_ntoa(socket.inet_aton(host)))
        except OSError:
            return host.lower() != "localhost" and "." in host
    return address.is_global
