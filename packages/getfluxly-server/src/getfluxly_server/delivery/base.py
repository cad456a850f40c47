"""The narrow interface every email provider implements, and what flows through it."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class OutgoingEmail:
    """One message to one or more recipients, as the platform hands it to a provider."""

    from_email: str
    to: tuple[str, ...]
    subject: str
    text: str | None = None
    html: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """The provider accepted the message: its id for the message and its answer."""

    provider_message_id: str | None
    reply: str
    elapsed_ms: int


class DeliveryError(Exception):
    """The provider refused or could not be reached. ``code`` is from the contract
    (connection_refused, auth_failed, starttls_not_advertised, tls_failed, timeout,
    dns_failed, rejected, ...); ``transient`` says whether trying later may succeed."""

    def __init__(
        self, code: str, detail: str, *, transient: bool = False, field: str | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.transient = transient
        #: The API field at fault, for validation errors.
        self.field = field


class ProviderClient(Protocol):
    """What the platform needs of a provider. Implementations hold no database state."""

    def verify(self) -> list[str]:
        """Check the credentials and connection without sending; returns warnings.

        Raises DeliveryError naming the first failure.
        """
        ...

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        """Hand one message to the provider; raises DeliveryError when it is refused."""
        ...


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
    #: Refuse hosts on private, loopback and link-local networks (multi-tenant installs).
    block_private_networks: bool = False


def check_host_allowed(host: str, context: BuildContext) -> list[str]:
    """Refuse private addresses when the operator's guard is on; returns warnings.

    Raises DeliveryError(host_not_allowed). Every address the name resolves to is checked,
    so a public name pointing at 127.0.0.1 is refused too.
    """
    if not context.block_private_networks:
        return []
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise DeliveryError("dns_failed", f"Could not resolve {host!r}: {exc.strerror}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:  # private, loopback, link-local, CGNAT, reserved...
            raise DeliveryError(
                "host_not_allowed",
                f"{host} resolves to {address}, a private network address; this server only "
                "connects to public relays (GETFLUXLY_MULTI_TENANT_GUARD is on)",
            )
    return []


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
