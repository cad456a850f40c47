"""What the HTTP API connectors share: the ``api_url`` rule, one kept httpx client per
provider, and turning transport failures and HTTP statuses into the contract's codes and
:class:`~getfluxly_server.delivery.base.Outcome`.

Contract of every connector built on this module:

- ``api_url`` (optional, not secret) is the API's base URL: scheme, host, optional port and
  path prefix, nothing else (no user:password, query or fragment). It must be ``https``;
  plain ``http`` is accepted only for a loopback host (``localhost``, 127/8, ``::1``), which
  is how tests and local fakes are reached. A bad ``api_url`` raises
  ``DeliveryError("validation_error")`` when the client is built (the API answers 400).
- With the multi-tenant guard on, every connection goes through the network policy's
  transport (:mod:`.netguard`): the host is resolved once at connect time and every address
  checked; a refusal looks exactly like a refused connection.
- With ``BuildContext.keep_connections`` (clients a worker's ClientCache holds): one
  ``httpx.Client`` per provider client, made on first use and kept (connections stay warm
  between messages; the client is thread-safe), closed by :meth:`HTTPAPI.close` once the
  requests still running have finished. Without it, one short-lived client per request.
  ``timeout`` from the BuildContext for each of connect, write, read and pool; redirects are
  never followed (a redirect could lead past the network guard); at most
  :data:`MAX_RESPONSE_BYTES` of an answer are read.
- Transport failures: connection refused (or reset/closed before the request went out) ->
  ``connection_refused``, TRANSIENT; a connect/write timeout -> ``timeout``, TRANSIENT; name
  resolution -> ``dns_failed``, TRANSIENT; TLS handshake or certificate -> ``tls_failed``,
  PERMANENT. For a request that hands a message over, a read timeout or a connection lost
  after the request was sent is UNKNOWN (``timeout`` / ``delivery_unknown``): the provider
  may have taken the message.
- HTTP statuses (:func:`classify_status`), unless a connector knows better: 401/403 ->
  ``auth_failed``; 408, 429 and 5xx -> ``deferred`` (TRANSIENT, with ``Retry-After`` kept);
  other 4xx -> ``rejected`` (PERMANENT); anything else that is not 2xx ->
  ``unexpected_response`` (PERMANENT).
- No upstream text in any error: a detail names the status with its standard reason phrase
  and our own advice (chosen from the status and the provider's documented error codes),
  never the answer's body or reason phrase, since ``api_url`` may point anywhere. No secret
  ever appears either: every detail goes through :meth:`HTTPAPI.redact`, and secrets travel
  only in request headers (never in URLs), so httpx's own exception messages cannot carry
  them.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import http
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from typing import Any
from urllib.parse import urlencode

import httpx

from getfluxly_server.delivery.base import BuildContext, DeliveryError, Field, Outcome

log = logging.getLogger("getfluxly.delivery")

#: The optional base-URL setting every HTTP provider kind takes (default: the real API).
API_URL = Field("api_url", required=False)
#: Provider answers are small JSON documents; more than this is not worth holding in memory
#: (an operator-chosen api_url could point anywhere).
MAX_RESPONSE_BYTES = 1 << 20
#: How long a line of text from a provider may be where one is shown (warnings).
MAX_MESSAGE_CHARS = 300
#: The longest Retry-After we keep (an hour); longer waits are the worker's backoff's job.
MAX_RETRY_AFTER = 3600.0
USER_AGENT = "GetFluxly (+https://getfluxly.com)"

#: What to try, by code, where a connector has nothing more specific to say.
ADVICE = {
    "connection_refused": "Check api_url, and whether an egress firewall or proxy blocks "
    "HTTPS from this server",
    "timeout": "Check api_url, and whether an egress firewall silently drops HTTPS from this "
    "server; the provider may also be slow, so trying later may succeed",
    "dns_failed": "Check the host in api_url and this server's DNS resolver",
    "tls_failed": "The api_url must speak HTTPS with a trusted certificate; a TLS-intercepting "
    "proxy needs its CA in this server's trust store",
    "deferred": "The provider is busy or unavailable; trying again later may succeed",
    "delivery_unknown": "Check the message in the provider's logs before sending it again",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (the only place plain http is allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credential(settings: Mapping[str, Any], name: str) -> str:
    """The credential ``name`` from ``settings``, without surrounding whitespace (pasted keys
    often carry some).

    Credentials travel in HTTP headers, so they must be printable ASCII; raises
    DeliveryError("validation_error") naming the field (never showing the value).
    """
    value = str(settings.get(name) or "").strip()
    if not value or not value.isascii() or not value.isprintable():
        raise DeliveryError(
            "validation_error",
            f"{name} must be the value copied from the provider (printable ASCII, no spaces "
            "around it)",
        )
    return value


def parse_api_url(value: object, default: str) -> httpx.URL:
    """The base URL to use: ``value`` when set, else ``default``; see the module contract.

    Raises DeliveryError("validation_error") naming what is wrong.
    """
    text = default if value is None or value == "" else value
    if not isinstance(text, str):
        raise DeliveryError("validation_error", "api_url must be text")
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise DeliveryError("validation_error", f"api_url is not a valid URL: {exc}") from None
    if url.scheme not in ("https", "http") or not url.host:
        raise DeliveryError(
            "validation_error", "api_url must be an https:// URL such as https://api.example.com"
        )
    if url.userinfo or url.query or url.fragment:
        raise DeliveryError(
            "validation_error",
            "api_url must be a base URL without user:password, query or fragment",
        )
    if url.scheme == "http" and not is_loopback(url.host):
        raise DeliveryError(
            "validation_error",
            f"api_url must use https: plain http would send the credentials to {url.host} "
            "unencrypted (http is only accepted for localhost test servers)",
        )
    return url


def classify_status(status: int) -> tuple[str, bool]:
    """The default (code, transient) for a non-2xx HTTP status."""
    if status in (401, 403):
        return "auth_failed", False
    if status in (408, 429) or 500 <= status <= 599:
        return "deferred", True
    if 400 <= status <= 499:
        return "rejected", False
    return "unexpected_response", False


def mailbox(address: str, name: str | None, *, encode_non_ascii: bool = False) -> str:
    """``Name <address>`` (RFC 5322), the display name quoted when it needs to be.

    With ``encode_non_ascii`` a non-ASCII name becomes an RFC 2047 encoded-word (Amazon SES
    requires that); otherwise it stays UTF-8, which the JSON APIs accept.
    """
    if not name:
        return address
    if encode_non_ascii and not name.isascii():
        return f"{Header(name, 'utf-8').encode()} <{address}>"
    if any(c in name for c in '()<>[]:;@\\,."') or name != name.strip():
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Provider text made safe for a detail: one line, printable, at most ``limit`` chars."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole (up to :data:`MAX_RESPONSE_BYTES`)."""

    status: int
    reason: str
    headers: httpx.Headers
    body: bytes
    elapsed_ms: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            return None

    def object(self) -> dict[str, Any]:
        """The body as a JSON object, or ``{}`` when it is anything else."""
        data = self.json()
        return data if isinstance(data, dict) else {}

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building a verifying context (loading the CA bundle) costs ~30 ms; one shared,
    # read-only context serves every request and thread.
    return httpx.create_ssl_context()


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what caused it (httpx wraps httpcore, which wraps the socket/ssl error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def transport_code(exc: httpx.HTTPError, *, delivers: bool = False) -> tuple[str, Outcome]:
    """(code, outcome) for a failure before any HTTP answer arrived; ``delivers``: the request
    hands a message over, so a failure after it was sent leaves the message UNKNOWN."""
    if isinstance(exc, httpx.ReadTimeout):
        return "timeout", Outcome.UNKNOWN if delivers else Outcome.TRANSIENT
    if isinstance(exc, httpx.TimeoutException):  # connect, write or pool: nothing handed over
        return "timeout", Outcome.TRANSIENT
    if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError) and delivers:
        return "delivery_unknown", Outcome.UNKNOWN
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLError):
            return "tls_failed", Outcome.PERMANENT
        if isinstance(cause, socket.gaierror):
            return "dns_failed", Outcome.TRANSIENT
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        # httpcore may re-raise with only the message kept; recognise the usual texts too.
        if "SSL" in text or "certificate" in text.lower():
            return "tls_failed", Outcome.PERMANENT
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "dns_failed", Outcome.TRANSIENT
    # Refused, reset, or closed before answering: all mean "nobody served us here".
    return "connection_refused", Outcome.TRANSIENT


def retry_after(headers: httpx.Headers) -> float | None:
    """The provider's ``Retry-After`` in seconds (delta or HTTP date), capped; None if absent
    or unreadable."""
    raw = (headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return min(float(raw), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - datetime.now(UTC)).total_seconds(), MAX_RETRY_AFTER))


def status_line(status: int) -> str:
    """``429 Too Many Requests``: the status with its standard phrase (never the server's)."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


class HTTPAPI:
    """One provider's API as a connector talks to it: base URL, network policy, secrets, and
    the kept httpx client. Thread-safe.

    ``secrets`` are the values to keep out of every detail this object produces.
    """

    def __init__(
        self,
        label: str,
        api_url: object,
        default_url: str,
        context: BuildContext,
        secrets: Iterable[str],
    ) -> None:
        self.label = label
        self.base = parse_api_url(api_url, default_url)
        self.context = context
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._in_flight = 0
        self._closing = False

    def __repr__(self) -> str:
        return f"HTTPAPI({self.label!r}, {str(self.base)!r})"

    @property
    def host(self) -> str:
        return self.base.host

    def url(self, path: str) -> httpx.URL:
        """The base URL with ``path`` (which starts with ``/``) appended to its path prefix."""
        return httpx.URL(str(self.base).rstrip("/") + path)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=self.context.timeout,
            follow_redirects=False,
            **self.context.network.http_client_options(_tls_context()),
        )

    def _acquire(self) -> httpx.Client:
        """The kept client (``keep_connections``), else one for this request only."""
        if not self.context.keep_connections:
            return self._new_client()
        with self._lock:
            if self._closing:
                raise DeliveryError(
                    "connection_refused", f"The {self.label} client was closed", transient=True
                )
            if self._client is None:
                self._client = self._new_client()
            self._in_flight += 1
            return self._client

    def _release(self) -> None:
        if not self.context.keep_connections:
            return
        with self._lock:
            self._in_flight -= 1
            last = self._closing and self._in_flight == 0
            client, self._client = (self._client, None) if last else (None, self._client)
        if client is not None:
            client.close()

    def close(self) -> None:
        """Close the kept client once the requests still running are done. Idempotent."""
        with self._lock:
            self._closing = True
            idle = self._in_flight == 0
            client, self._client = (self._client, None) if idle else (None, self._client)
        if client is not None:
            client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        json_body: Any = None,
        form: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
        delivers: bool = False,
    ) -> Answer:
        """Send one request and read the answer; raises DeliveryError when none arrives.

        ``delivers``: the request hands a message over (see :func:`transport_code`).
        """
        url = self.url(path)
        sent_headers = {"User-Agent": USER_AGENT, **headers}
        if form is not None:
            # Encoded here: httpx's data= wants a mapping, and a form repeats names ("to").
            content = urlencode(form).encode("ascii")
            sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        client = self._acquire()
        try:
            with (
                client if not self.context.keep_connections else contextlib.nullcontext(),
                client.stream(
                    method, url, headers=sent_headers, json=json_body, content=content
                ) as response,
            ):
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= MAX_RESPONSE_BYTES:
                        break  # enough to classify; the rest is not worth reading
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, delivers=delivers) from exc
        finally:
            self._release()
        return Answer(
            status=response.status_code,
            reason=response.reason_phrase,
            headers=response.headers,
            body=bytes(body[:MAX_RESPONSE_BYTES]),
            elapsed_ms=round((time.perf_counter() - started) * 1000),
        )

    def transport_error(self, exc: httpx.HTTPError, *, delivers: bool = False) -> DeliveryError:
        code, outcome = transport_code(exc, delivers=delivers)
        what = {
            "timeout": f"{self.label} did not answer within {self.context.timeout:g}s",
            "tls_failed": f"The TLS handshake with {self.host} failed",
            "dns_failed": f"Could not resolve {self.host}",
            "connection_refused": f"Could not connect to {self.label} at {self.host}",
            "delivery_unknown": f"The connection to {self.label} was lost before it answered",
        }[code]
        # The low-level reason stays in the log: in a detail it would tell a refused port
        # from a filtered one (or the network guard's refusal), which is a port scanner.
        log.info("%s: %s (%s)", self.label, what, self.redact(one_line(str(exc) or repr(exc))))
        detail = f"{what}. {ADVICE[code]}"
        if outcome is Outcome.UNKNOWN:
            detail += "; the message may have been accepted, so it is not sent again automatically"
        return DeliveryError(code, self.redact(detail), outcome=outcome)

    def error(
        self,
        answer: Answer,
        message: str | None = None,
        *,
        code: str | None = None,
        transient: bool | None = None,
        advice: str | None = None,
        name: str | None = None,
    ) -> DeliveryError:
        """A DeliveryError for a non-2xx (or refused 2xx) ``answer``.

        ``message`` (the provider's own text) is never shown: ``api_url`` may point at any
        service, whose answers must not be echoed; the detail is the status, its standard
        phrase, ``name`` (a documented error name the connector recognised from its own fixed
        list, never free text) and ``advice``. ``code``/``transient`` default to
        :func:`classify_status`, ``advice`` to :data:`ADVICE`.
        """
        del message  # deliberately unused: see the docstring
        default_code, default_transient = classify_status(answer.status)
        code = code or default_code
        is_transient = default_transient if transient is None else transient
        detail = f"{self.label} answered HTTP {status_line(answer.status)}"
        if name:
            detail += f" ({name})"
        advice = advice if advice is not None else ADVICE.get(code)
        if advice:
            detail += f". {advice}"
        return DeliveryError(
            code,
            self.redact(detail),
            outcome=Outcome.TRANSIENT if is_transient else Outcome.PERMANENT,
            reply=status_line(answer.status),
            retry_after=retry_after(answer.headers) if is_transient else None,
        )

    def unexpected(
        self, answer: Answer, what: str, *, outcome: Outcome = Outcome.PERMANENT
    ) -> DeliveryError:
        """A 2xx answer we cannot use (the provider changed, or api_url points elsewhere).
        After a send, pass ``outcome=UNKNOWN``: the message may have been taken."""
        return DeliveryError(
            "unexpected_response",
            self.redact(
                f"{self.label} answered HTTP {status_line(answer.status)} but {what}; check "
                f"that api_url points at the {self.label} API"
            ),
            outcome=outcome,
            reply=status_line(answer.status),
        )


def require_body(label: str, text: str | None, html: str | None) -> None:
    """The HTTP APIs all refuse a message with neither body; say so before sending."""
    if not text and not html:
        raise DeliveryError(
            "rejected", f"The message has neither a text nor an HTML body; {label} needs one"
        )
