"""The multi-tenant network guard: which addresses a provider connection may reach.

With ``GETFLUXLY_MULTI_TENANT_GUARD`` off (the default: a self-hosted team's ``localhost:25``
staging relay is a real use) nothing here is consulted and connections resolve names as
they always did. With it on, every provider connection (SMTP through FluxMail's ``resolve``
hook, HTTP APIs through :class:`GuardedHTTPTransport`) goes through
:meth:`NetworkPolicy.addresses`:

- the name is resolved **once**, at connect time; **every** address it resolves to is checked,
  and the connection goes to the checked addresses only, never to a second lookup (so a DNS
  answer cannot change between the check and the connect: no rebinding). TLS still verifies
  the certificate against the configured host name.
- refused: anything that is not a public unicast address (private, loopback, link-local,
  CGNAT shared space, multicast, reserved, unspecified, documentation, benchmarking, IETF
  protocol assignments, unique-local and site-local IPv6), and IPv6 addresses that embed an
  IPv4 address which would be refused (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
  ``::a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) as well as the local-use NAT64
  prefix ``64:ff9b:1::/48`` and Teredo ``2001::/32``, whose real endpoints cannot be checked.
  Because the decision is on the resolved address, every other spelling of a refused address
  (``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``::ffff:127.0.0.1``, a public
  name that resolves to ``10.0.0.5``...) is refused the same way.
- allowed anyway: what the operator lists in ``GETFLUXLY_PRIVATE_RELAY_ALLOWLIST`` (host names,
  matched exactly against the configured host, and IP networks in CIDR form, matched against
  every resolved address), and the exact host and port of dev mode's own mail catcher.

A refusal raises :class:`ConnectionRefusedError`, on purpose: the API answers it exactly as a
connection that was really refused (``connection_refused``, the same detail), so a tenant
cannot use the guard's answers (or their timing: a refusal is immediate for every port of a
private address) to map what listens on the internal network. The operator sees the real
reason in the server log (logger ``getfluxly.netguard``, level WARNING). What remains visible
on purpose: ``dns_failed`` for a name that does not resolve (so a tenant can tell whether a
name exists in this server's DNS, but learns nothing about what listens behind it), and the
whole behaviour of public addresses, which the guard does not cover.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

log = logging.getLogger("getfluxly.netguard")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Ranges Python's ``is_global`` lets through but a relay never lives in.
_ALSO_REFUSED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "192.0.0.0/24",  # IETF protocol assignments
        "224.0.0.0/4",  # multicast (is_global is true for some of it)
        "240.0.0.0/4",  # reserved, and the broadcast address
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): its IPv4 side is not ours to check
        "2001::/32",  # Teredo: the real endpoint is obfuscated in the address
        "ff00::/8",  # IPv6 multicast
        "fec0::/10",  # IPv6 site-local (deprecated, still routed by some)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one:
    IPv4-mapped, IPv4-compatible (``::a.b.c.d``, not ``::`` or ``::1``), 6to4, NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return None


def is_refused(address: Address) -> bool:
    """Whether the guard refuses ``address`` (before the operator's allow-list)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # fe80::1%eth0 and the like: link-scoped by definition
            return True
        inner = embedded_ipv4(address)
        if inner is not None:  # decided by the IPv4 address it stands for (DNS64 included)
            return is_refused(inner)
    if not address.is_global or address.is_multicast or address.is_reserved:
        return True
    return any(
        address in network for network in _ALSO_REFUSED if network.version == address.version
    )


@dataclass(frozen=True)
class NetworkPolicy:
    """Where provider connections may go. ``guard`` off: anywhere, resolved as usual.

    ``allowed_hosts`` are lower-case host names (or IP literals) allowed whatever they resolve
    to; ``allowed_networks`` are allowed wherever a name resolves into them; ``allowed_endpoints``
    are exact ``(host, port)`` pairs (dev mode's catcher).
    """

    guard: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()
    allowed_endpoints: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def parse_allowlist(cls, text: str) -> tuple[frozenset[str], tuple[Network, ...]]:
        """Hosts and CIDR networks from ``GETFLUXLY_PRIVATE_RELAY_ALLOWLIST`` (comma-separated).

        Raises ValueError naming the first entry that is neither.
        """
        hosts: set[str] = set()
        networks: list[Network] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(
                        f"{raw.strip()!r} is not a CIDR network (such as 10.0.0.0/8 or fd00::/8)"
                    ) from None
                continue
            try:
                networks.append(ipaddress.ip_network(entry))  # a single address
                continue
            except ValueError:
                pass
            labels = entry.rstrip(".").split(".")
            if not all(label and len(label) <= 63 and _is_label(label) for label in labels):
                raise ValueError(
                    f"{raw.strip()!r} is neither a host name, an IP address nor a CIDR network"
                )
            hosts.add(entry.rstrip("."))
        return frozenset(hosts), tuple(networks)

    def with_endpoint(self, host: str, port: int) -> NetworkPolicy:
        """This policy, also allowing exactly ``host:port`` (for dev mode's own catcher)."""
        return NetworkPolicy(
            self.guard,
            self.allowed_hosts,
            self.allowed_networks,
            self.allowed_endpoints | {(_normal(host), port)},
        )

    def describe(self) -> str:
        """One line for the startup log: which mode is on, and what is allowed."""
        if not self.guard:
            return "multi-tenant guard off: providers may use any address, private ones included"
        allowed = sorted(self.allowed_hosts) + [str(n) for n in self.allowed_networks]
        allowed += [f"{h}:{p}" for h, p in sorted(self.allowed_endpoints)]
        listed = ", ".join(allowed) if allowed else "nothing"
        return f"multi-tenant guard on: private addresses refused; allow-listed: {listed}"

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host:port``, each checked (see the module doc).

        Raises ``socket.gaierror`` when the name does not resolve and
        :class:`ConnectionRefusedError` when the guard refuses.
        """
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not self.guard:
            return found
        name = _normal(host)
        if name in self.allowed_hosts or (name, port) in self.allowed_endpoints:
            return found
        for text in found:
            address = ipaddress.ip_address(text)
            if is_refused(address) and not any(address in n for n in self.allowed_networks):
                log.warning(
                    "multi-tenant guard refused a provider connection to %s port %d: it "
                    "resolves to %s, a non-public address (allow it with "
                    "GETFLUXLY_PRIVATE_RELAY_ALLOWLIST if it is your relay)",
                    host, port, address,
                )  # fmt: skip
                raise ConnectionRefusedError(111, "Connection refused")
        return found

    def smtp_resolver(self) -> Any:
        """FluxMail's ``resolve`` hook for this policy (None with the guard off: unchanged)."""
        return self.addresses if self.guard else None

    def http_client_options(self, verify: Any) -> dict[str, Any]:
        """``httpx.Client`` arguments for provider APIs under this policy: none with the guard
        off (unchanged); with it on, the guarded transport and no proxy from the environment
        (a proxy would make the connection for us, past the check)."""
        if not self.guard:
            return {"verify": verify}
        return {"transport": GuardedHTTPTransport(self, verify=verify), "trust_env": False}


def _normal(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


def _is_label(label: str) -> bool:
    return all(c.isalnum() or c == "-" for c in label) and label.isascii() and label[0] != "-"


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to the addresses the policy checked."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            candidates: Sequence[str] = self.policy.addresses(host, port)
        except OSError as exc:  # gaierror or a refusal: httpx's ConnectError, cause kept
            raise httpcore.ConnectError(str(exc)) from exc
        failure: Exception | None = None
        for address in candidates:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None, "getaddrinfo answered no address"
        raise failure


class GuardedHTTPTransport(httpx.HTTPTransport):
    """httpx's transport whose connections go through the policy (TLS still checks the name:
    httpcore sends the URL's host as SNI and verifies the certificate against it)."""

    def __init__(self, policy: NetworkPolicy, *, verify: Any) -> None:
        super().__init__(verify=verify)
        # httpx builds its httpcore pool itself and takes no network backend; this pool is
        # the one it would build, on our backend (a test proves the guard applies).
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pool = httpcore.ConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(policy),
        )
