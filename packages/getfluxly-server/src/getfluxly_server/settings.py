"""GetFluxly's settings: read once from ``GETFLUXLY_*`` variables at the composition root.

Every problem with the environment is collected and reported together, each naming the
variable, what was wrong and what to do, so a bad deployment fails at boot with one clear
message instead of at the first request.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from getfluxly_server.crypto import Keyring, KeyringError
from getfluxly_server.delivery.netguard import NetworkPolicy

DEFAULT_DATA_DIR = ".getfluxly"
#: GETFLUXLY_MAX_BODY_BYTES may not go below the ingest batch's own limit (256 KB).
MIN_BODY_BYTES = 256 * 1024
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Where Amazon SNS serves its signing certificates and subscription confirmations.
SNS_HOSTS = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"


class SettingsError(Exception):
    """The environment is unusable; ``problems`` lists one line per bad variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "Invalid GetFluxly configuration:\n" + "\n".join(f"- {p}" for p in problems)
        )
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Everything configurable, validated. Built by :meth:`from_env` (or directly in tests)."""

    database_url: str
    keyring: Keyring = field(repr=False)
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    #: Refuse email providers on private and loopback networks (for multi-tenant installs).
    multi_tenant_guard: bool = False
    #: Under the guard, still allowed: host names and IP networks (GETFLUXLY_PRIVATE_RELAY_
    #: ALLOWLIST); the policy's ``guard`` flag is not used (``multi_tenant_guard`` is).
    private_relay_allowlist: NetworkPolicy = field(default_factory=NetworkPolicy)
    job_lease_seconds: float = 60.0
    worker_threads: int = 4
    #: How often an idle job worker looks for due jobs it was not woken for (enqueues wake it
    #: at once, from any process; the poll is the fallback and finds jobs that come due later).
    job_poll_seconds: float = 0.2
    #: The longest a failed job waits before its retry (kinds may set a cap of their own).
    job_backoff_cap_seconds: float = 600.0
    #: Finished jobs (done, or failed for good) are deleted this many days after they ended.
    job_retention_days: float = 7.0
    #: Delivery workers (``domain/delivery``): threads per process, each claiming up to
    #: ``delivery_batch`` due messages at a time.
    delivery_threads: int = 2
    delivery_batch: int = 500
    #: Messages handed to a provider at once, marked ``sending`` together just before: the
    #: most a worker killed mid-send can leave ``unknown`` per thread.
    delivery_chunk: int = 50
    #: How long claimed messages stay a delivery worker's without renewal; a message left in
    #: ``sending`` by a worker that died becomes ``unknown`` once it runs out.
    delivery_lease_seconds: float = 60.0
    #: A message deferred (4xx, timeout, network) is retried with capped, fully jittered
    #: exponential backoff (``base * 2**attempt``, at most ``cap``) until it is this old
    #: (72 hours, as MTAs keep mail queued), then it fails.
    delivery_max_age_seconds: float = 72 * 3600.0
    delivery_backoff_base_seconds: float = 60.0
    delivery_backoff_cap_seconds: float = 3600.0
    #: How long POST /v1/email-providers/{id}/test waits for the worker's outcome.
    test_send_timeout: float = 30.0
    smtp_timeout: float = 15.0
    log_level: str = "INFO"
    #: Requests a second each API key may make (a token bucket of ``rate_limit_burst``).
    rate_limit_per_second: float = 1000.0
    rate_limit_burst: int = 2000
    #: Requests a second a project's publishable key may make from one client address (the
    #: key is public: a per-key budget would let any visitor spend everyone's).
    publishable_rate_per_second: float = 50.0
    publishable_rate_burst: int = 500
    #: Failed authentications (401) a second from one client address; past the burst, that
    #: address is answered 429 before its key is even looked up.
    auth_failure_rate_per_second: float = 2.0
    auth_failure_rate_burst: int = 60
    #: Requests a second from one client address to the public pages (the open pixel, the
    #: click redirect, unsubscribe and the preference page: no key, the signed token is the
    #: credential). Generous: mailbox providers' image proxies fetch many readers' opens.
    public_rate_per_second: float = 50.0
    public_rate_burst: int = 500
    #: Webhook posts that fail verification (401) a second from one client address to one
    #: project (and to unknown relays and projects, 404, per address); past the burst, that
    #: address's posts there are answered 429 before anything is verified.
    webhook_failure_rate_per_second: float = 1.0
    webhook_failure_rate_burst: int = 30
    #: Proxies whose X-Forwarded-For is believed (addresses or networks); none by default,
    #: so the client address is the socket's peer unless the operator says otherwise.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: The largest request body any route reads (413 beyond; ingest keeps its own limits).
    max_body_bytes: int = 1024 * 1024
    #: Outbound webhooks (``domain/outbound``): how long one POST to a customer's endpoint
    #: may take, and the capped, fully jittered backoff between its attempts.
    webhook_timeout_seconds: float = 10.0
    webhook_backoff_base_seconds: float = 10.0
    webhook_backoff_cap_seconds: float = 3600.0
    #: Deliveries that ended longer ago than this are deleted from the delivery log.
    webhook_log_retention_days: float = 30.0
    #: The bounce mailbox (``domain/bounce_mailbox``): where ``serve`` listens for DSNs and
    #: complaint reports (``(host, port)``, None: it does not), and the domain of the VERP
    #: return paths (``bounces+<message id>@<domain>``) SMTP providers send with (None: the
    #: envelope sender stays the From address).
    bounce_listen: tuple[str, int] | None = None
    bounce_domain: str | None = None
    #: Feedback (``domain/feedback``): an address whose soft bounces of this many distinct
    #: messages were reported within ``soft_bounce_window_days`` is suppressed.
    soft_bounce_limit: int = 3
    soft_bounce_window_days: float = 30.0
    #: Amazon SNS (the ``ses`` webhook): the hosts (``host`` or ``host:port``, a regular
    #: expression matched whole) a SigningCertURL may name and a SubscribeURL may be
    #: confirmed on, both over HTTPS; and the CA bundle those fetches trust (None: the
    #: system's). Tests point them at a local server with a test CA.
    sns_cert_hosts: str = SNS_HOSTS
    sns_subscribe_hosts: str = SNS_HOSTS
    sns_ca_file: Path | None = None
    #: Opens and clicks within this many seconds of the relay accepting the message are
    #: flagged machine (security gateways fetch and follow everything on arrival).
    tracking_scanner_seconds: float = 5.0
    #: The DNS server the domain check asks, as (host, port); None: the system's resolvers.
    dns_resolver: tuple[str, int] | None = None
    #: How often the segment pass runs (time-based conditions, mail and subscription state).
    segment_pass_seconds: float = 30.0
    dev: bool = False

    def listening_on(self, port: int) -> Settings:
        """These settings serving on ``port`` (the CLI's ``--port``). A public URL that was
        only the default (this machine at the old port) follows, so the links the server
        writes (webhooks, tracking, unsubscribe) reach it; one that was set stays."""
        public_url = (
            _local_url(port) if self.public_url == _local_url(self.port) else self.public_url
        )
        return replace(self, port=port, public_url=public_url)

    @property
    def network_policy(self) -> NetworkPolicy:
        """Where provider connections may go: the guard's mode with the allow-list (and, in
        dev mode, the catcher's own address)."""
        return replace(self.private_relay_allowlist, guard=self.multi_tenant_guard)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        dev: bool = False,
        data_dir: Path | None = None,
    ) -> Settings:
        """Read and check every ``GETFLUXLY_*`` variable; raise SettingsError listing all
        problems. ``dev`` fills what a newcomer has not set (a key stored in the data dir);
        ``data_dir`` (the CLI's --data-dir) wins over GETFLUXLY_DATA_DIR."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        data_dir = data_dir or Path(env.get("GETFLUXLY_DATA_DIR") or DEFAULT_DATA_DIR)
        default_db = f"sqlite:///{(data_dir / 'getfluxly.db').as_posix()}"
        database_url = normalize_database_url(env.get("GETFLUXLY_DATABASE_URL") or default_db)
        if not database_url.startswith(("sqlite:///", "postgresql+psycopg://")):
            reader.problems.append(
                "GETFLUXLY_DATABASE_URL must be sqlite:///path/to/file.db or "
                "postgresql://user:password@host:5432/database"
            )
        keyring = reader.keyring(data_dir if dev else None)
        values: dict[str, object] = {
            "database_url": database_url,
            "data_dir": data_dir,
            "host": env.get("GETFLUXLY_HOST", "127.0.0.1"),
            "port": (port := reader.integer("GETFLUXLY_PORT", 8000, 1, 65535)),
            "public_url": reader.url("GETFLUXLY_PUBLIC_URL", _local_url(port)),
            "multi_tenant_guard": reader.flag("GETFLUXLY_MULTI_TENANT_GUARD", False),
            "private_relay_allowlist": reader.allowlist("GETFLUXLY_PRIVATE_RELAY_ALLOWLIST"),
            "job_lease_seconds": reader.number("GETFLUXLY_JOB_LEASE_SECONDS", 60.0, 1.0),
            "worker_threads": reader.integer("GETFLUXLY_WORKER_THREADS", 4, 1, 256),
            "job_poll_seconds": reader.number("GETFLUXLY_JOB_POLL_SECONDS", 0.2, 0.01),
            "job_backoff_cap_seconds": reader.number(
                "GETFLUXLY_JOB_BACKOFF_CAP_SECONDS", 600.0, 1.0
            ),
            "job_retention_days": reader.number("GETFLUXLY_JOB_RETENTION_DAYS", 7.0, 0.01),
            "delivery_threads": reader.integer("GETFLUXLY_DELIVERY_THREADS", 2, 0, 64),
            "delivery_batch": reader.integer("GETFLUXLY_DELIVERY_BATCH", 500, 1, 10_000),
            "delivery_chunk": reader.integer("GETFLUXLY_DELIVERY_CHUNK", 50, 1, 1_000),
            "delivery_lease_seconds": reader.number("GETFLUXLY_DELIVERY_LEASE_SECONDS", 60.0, 1.0),
            "delivery_max_age_seconds": reader.number(
                "GETFLUXLY_DELIVERY_MAX_AGE_SECONDS", 72 * 3600.0, 1.0
            ),
            "delivery_backoff_base_seconds": reader.number(
                "GETFLUXLY_DELIVERY_BACKOFF_BASE_SECONDS", 60.0, 0.001
            ),
            "delivery_backoff_cap_seconds": reader.number(
                "GETFLUXLY_DELIVERY_BACKOFF_CAP_SECONDS", 3600.0, 0.001
            ),
            "test_send_timeout": reader.number("GETFLUXLY_TEST_SEND_TIMEOUT", 30.0, 1.0),
            "smtp_timeout": reader.number("GETFLUXLY_SMTP_TIMEOUT", 15.0, 1.0),
            "log_level": reader.choice(
                "GETFLUXLY_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            "rate_limit_per_second": reader.number("GETFLUXLY_RATE_LIMIT_PER_SECOND", 1000.0, 0.1),
            "rate_limit_burst": reader.integer("GETFLUXLY_RATE_LIMIT_BURST", 2000, 1, 10_000_000),
            "publishable_rate_per_second": reader.number(
                "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_PER_SECOND", 50.0, 0.1
            ),
            "publishable_rate_burst": reader.integer(
                "GETFLUXLY_PUBLISHABLE_RATE_LIMIT_BURST", 500, 1, 10_000_000
            ),
            "auth_failure_rate_per_second": reader.number(
                "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_PER_SECOND", 2.0, 0.01
            ),
            "auth_failure_rate_burst": reader.integer(
                "GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_BURST", 60, 1, 10_000_000
            ),
            "public_rate_per_second": reader.number(
                "GETFLUXLY_PUBLIC_RATE_LIMIT_PER_SECOND", 50.0, 0.01
            ),
            "public_rate_burst": reader.integer(
                "GETFLUXLY_PUBLIC_RATE_LIMIT_BURST", 500, 1, 10_000_000
            ),
            "webhook_failure_rate_per_second": reader.number(
                "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_PER_SECOND", 1.0, 0.01
            ),
            "webhook_failure_rate_burst": reader.integer(
                "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_BURST", 30, 1, 10_000_000
            ),
            "trusted_proxies": reader.networks("GETFLUXLY_TRUSTED_PROXIES"),
            "max_body_bytes": reader.integer(
                "GETFLUXLY_MAX_BODY_BYTES", 1024 * 1024, MIN_BODY_BYTES, 1024 * 1024 * 1024
            ),
            "webhook_timeout_seconds": reader.number(
                "GETFLUXLY_WEBHOOK_TIMEOUT_SECONDS", 10.0, 1.0
            ),
            "webhook_backoff_base_seconds": reader.number(
                "GETFLUXLY_WEBHOOK_BACKOFF_BASE_SECONDS", 10.0, 0.001
            ),
            "webhook_backoff_cap_seconds": reader.number(
                "GETFLUXLY_WEBHOOK_BACKOFF_CAP_SECONDS", 3600.0, 0.001
            ),
            "webhook_log_retention_days": reader.number(
                "GETFLUXLY_WEBHOOK_LOG_RETENTION_DAYS", 30.0, 0.01
            ),
            "bounce_listen": reader.endpoint("GETFLUXLY_BOUNCE_LISTEN"),
            "bounce_domain": reader.domain("GETFLUXLY_BOUNCE_DOMAIN"),
            "soft_bounce_limit": reader.integer("GETFLUXLY_SOFT_BOUNCE_LIMIT", 3, 1, 1_000),
            "soft_bounce_window_days": reader.number(
                "GETFLUXLY_SOFT_BOUNCE_WINDOW_DAYS", 30.0, 0.001
            ),
            "sns_cert_hosts": reader.pattern("GETFLUXLY_SNS_CERT_HOSTS", SNS_HOSTS),
            "sns_subscribe_hosts": reader.pattern("GETFLUXLY_SNS_SUBSCRIBE_HOSTS", SNS_HOSTS),
            "sns_ca_file": reader.file("GETFLUXLY_SNS_CA_FILE"),
            "tracking_scanner_seconds": reader.number(
                "GETFLUXLY_TRACKING_SCANNER_SECONDS", 5.0, 0.0
            ),
            "dns_resolver": reader.host_port("GETFLUXLY_DNS_RESOLVER", 53),
            "segment_pass_seconds": reader.number("GETFLUXLY_SEGMENT_PASS_SECONDS", 30.0, 0.1),
            "dev": dev,
        }
        if reader.problems:
            raise SettingsError(reader.problems)
        assert keyring is not None
        return cls(keyring=keyring, **values)  # type: ignore[arg-type]


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever spelling the operator used."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def parse_listen(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:2525`` for IPv6) as ``(host, port)``; with ``default_port`` the
    port may be left out (``10.0.0.2``, ``[::1]``, or a bare IPv6 address). ValueError saying
    what is wrong."""
    raw = text.strip()
    port: str | None
    if raw.startswith("["):
        host, closed, rest = raw[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None if closed and not rest else ""
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    else:
        host, port = raw, None
    if port is None and default_port is not None:
        port = str(default_port)
    if not host or port is None or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, such as 0.0.0.0:25 or [::]:25")
    return host, int(port)


def _is_dns_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and label.isascii()
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        and not label.endswith("-")
    )


class _Reader:
    """Parses variables, recording a problem (and a default) instead of raising at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            self.problems.append(f"{name}={raw!r} must be a whole number from {low} to {high}")
            return default
        return int(raw)

    def number(self, name: str, default: float, low: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not value >= low or value == float("inf"):
            self.problems.append(f"{name}={raw!r} must be a number of at least {low:g}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name}={raw!r} must be true or false")
        return default

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.upper() not in choices:
            self.problems.append(f"{name}={raw!r} must be one of {', '.join(choices)}")
            return default
        return raw.upper()

    def url(self, name: str, default: str) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if not raw.startswith(("http://", "https://")) or " " in raw:
            self.problems.append(f"{name}={raw!r} must be an http(s):// URL")
            return default
        return raw.rstrip("/")

    def allowlist(self, name: str) -> NetworkPolicy:
        raw = self._raw(name)
        if raw is None:
            return NetworkPolicy()
        try:
            hosts, networks = NetworkPolicy.parse_allowlist(raw)
        except ValueError as exc:
            self.problems.append(
                f"{name}: {exc}; list host names and CIDR networks separated by commas, "
                "such as relay.internal,10.20.0.0/16"
            )
            return NetworkPolicy()
        return NetworkPolicy(allowed_hosts=hosts, allowed_networks=networks)

    def host_port(self, name: str, default_port: int) -> tuple[str, int] | None:
        """An IP address with an optional port: ``127.0.0.1:5353``, ``[::1]:5353``,
        ``10.0.0.2`` (port ``default_port``)."""
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            host, port = parse_listen(raw, default_port)
            ipaddress.ip_address(host)
        except ValueError:
            port = 0
        if port == 0:
            self.problems.append(
                f"{name}={raw!r} must be a DNS server's IP address with an optional port, "
                "such as 127.0.0.1:5353 or [::1]:53"
            )
            return None
        return host, port

    def endpoint(self, name: str) -> tuple[str, int] | None:
        """``HOST:PORT`` (``[::1]:25`` for IPv6), or None when unset."""
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return parse_listen(raw)
        except ValueError as exc:
            self.problems.append(f"{name}={raw!r}: {exc}")
            return None

    def domain(self, name: str) -> str | None:
        """A DNS domain name (lower-cased), or None when unset."""
        raw = self._raw(name)
        if raw is None:
            return None
        labels = raw.lower().rstrip(".").split(".")
        if len(labels) < 2 or not all(_is_dns_label(label) for label in labels):
            self.problems.append(
                f"{name}={raw!r} must be a domain name such as bounces.example.com"
            )
            return None
        return ".".join(labels)

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        """Comma-separated addresses or networks (``10.0.0.0/8, 192.168.1.7, ::1``)."""
        raw = self._raw(name)
        if raw is None:
            return ()
        found = []
        for part in (p.strip() for p in raw.split(",")):
            try:
                found.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                self.problems.append(
                    f"{name}: {part!r} is not an IP address or network (e.g. 10.0.0.0/8)"
                )
        return tuple(found)

    def pattern(self, name: str, default: str) -> str:
        """A regular expression (matched whole by its users)."""
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            re.compile(raw)
        except re.error as exc:
            self.problems.append(f"{name}={raw!r} is not a regular expression ({exc})")
            return default
        return raw

    def file(self, name: str) -> Path | None:
        """A path to a file that exists."""
        raw = self._raw(name)
        if raw is None:
            return None
        if not Path(raw).is_file():
            self.problems.append(f"{name}={raw!r} is not a file")
            return None
        return Path(raw)

    def keyring(self, dev_dir: Path | None) -> Keyring | None:
        raw = self._raw("GETFLUXLY_ENCRYPTION_KEYS")
        if raw is None:
            if dev_dir is not None:
                return Keyring.for_development(dev_dir / "encryption.key")
            self.problems.append(
                "GETFLUXLY_ENCRYPTION_KEYS is not set: generate one with "
                "`getfluxly keys generate-encryption-key` and set it (kid:base64key, newest "
                "first, comma-separated to rotate)"
            )
            return None
        try:
            return Keyring.parse(raw)
        except KeyringError as exc:
            self.problems.append(f"GETFLUXLY_ENCRYPTION_KEYS: {exc}")
            return None
