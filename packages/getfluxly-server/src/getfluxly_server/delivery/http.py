"""What the HTTP API connectors share: the ``api_url`` rule, one request at a time over httpx,
and turning transport failures and HTTP statuses into the contract's DeliveryError codes.

Contract of every connector built on this module:

- ``api_url`` (optional, not secret) is the API's base URL: scheme, host, optional port and
  path prefix, nothing else (no user:password, query or fragment). It must be ``https``;
  plain ``http`` is accepted only for a loopback host (``localhost``, 127/8, ``::1``), which
  is how tests and local fakes are reached. A bad ``api_url`` raises
  ``DeliveryError("validation_error")`` when the client is built (the API answers 400).
- Before any request the host goes through :func:`check_host_allowed` (the operator's
  private-network guard), as the SMTP adapter does.
- One short-lived ``httpx.Client`` per request (the ProviderClient protocol has no close(),
  so nothing may be left open), ``timeout`` from the BuildContext for each of connect, write,
  read and pool; redirects are never followed (a redirect could lead past the network guard);
  at most :data:`MAX_RESPONSE_BYTES` of an answer are read.
- Transport failures: connection refused (or reset/closed early) -> ``connection_refused``
  (transient), timeout -> ``timeout`` (transient), name resolution -> ``dns_failed``, TLS
  handshake or certificate -> ``tls_failed``.
- HTTP statuses (:func:`classify_status`), unless a connector knows better from the body:
  401/403 -> ``auth_failed``; 408, 429 and 5xx -> ``deferred`` (transient); other 4xx ->
  ``rejected``; anything else that is not 2xx -> ``unexpected_response``.
- No secret ever appears in an error detail: every detail goes through :meth:`HTTPAPI.redact`,
  which replaces each secret the connector registered (API key, token, ...) wherever it occurs,
  including in text the provider echoed back. Secrets travel only in request headers (never in
  URLs), so httpx's own exception messages cannot carry them either.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.header import Header
from typing import Any
from urllib.parse import urlencode

import httpx

from getfluxly_server.delivery.base import BuildContext, DeliveryError, Field, check_host_allowed

#: The optional base-URL setting every HTTP provider kind takes (default: the real API).
API_URL = Field("api_url", required=False)
#: Provider answers are small JSON documents; more than this is not worth holding in memory
#: (an operator-chosen api_url could point anywhere).
MAX_RESPONSE_BYTES = 1 << 20
#: How much of a provider's own error text makes it into a detail.
MAX_MESSAGE_CHARS = 300
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


def transport_code(exc: httpx.HTTPError) -> tuple[str, bool]:
    """(code, transient) for a failure before any HTTP answer arrived."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", True
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLError):
            return "tls_failed", False
        if isinstance(cause, socket.gaierror):
            return "dns_failed", False
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        # httpcore may re-raise with only the message kept; recognise the usual texts too.
        if "SSL" in text or "certificate" in text.lower():
            return "tls_failed", False
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "dns_failed", False
    # Refused, reset, or closed before answering: all mean "nobody served us here".
    return "connection_refused", True


class HTTPAPI:
    """One provider's API as a connector talks to it: base URL, network policy, secrets.

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

    def __repr__(self) -> str:
        return f"HTTPAPI({self.label!r}, {str(self.base)!r})"

    @property
    def host(self) -> str:
        return self.base.host

    def url(self, path: str) -> httpx.URL:
        """The base URL with ``path`` (which starts with ``/``) appended to its path prefix."""
        return httpx.URL(str(self.base).rstrip("/") + path)

    def check_host(self) -> list[str]:
        """Apply the operator's private-network guard to the API host; returns warnings."""
        try:
            return check_host_allowed(self.host, self.context)
        except DeliveryError as exc:
            detail = self.redact(exc.detail)
            raise DeliveryError(exc.code, detail, transient=exc.transient) from None

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        json_body: Any = None,
        form: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
    ) -> Answer:
        """Send one request and read the answer; raises DeliveryError when none arrives."""
        url = self.url(path)
        sent_headers = {"User-Agent": USER_AGENT, **headers}
        if form is not None:
            # Encoded here: httpx's data= wants a mapping, and a form repeats names ("to").
            content = urlencode(form).encode("ascii")
            sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
        started = time.perf_counter()
        try:
            with (
                httpx.Client(
                    timeout=self.context.timeout, follow_redirects=False, verify=_tls_context()
                ) as client,
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
            raise self.transport_error(exc) from exc
        return Answer(
            status=response.status_code,
            reason=response.reason_phrase,
            headers=response.headers,
            body=bytes(body[:MAX_RESPONSE_BYTES]),
            elapsed_ms=round((time.perf_counter() - started) * 1000),
        )

    def transport_error(self, exc: httpx.HTTPError) -> DeliveryError:
        code, transient = transport_code(exc)
        what = {
            "timeout": f"{self.label} did not answer within {self.context.timeout:g}s",
            "tls_failed": f"The TLS handshake with {self.host} failed",
            "dns_failed": f"Could not resolve {self.host}",
            "connection_refused": f"Could not connect to {self.label} at {self.host}",
        }[code]
        # Redact before shortening: a cut could leave part of a secret unrecognisable.
        reason = one_line(self.redact(str(exc))) if str(exc) else type(exc).__name__
        return DeliveryError(
            code, self.redact(f"{what} ({reason}). {ADVICE[code]}"), transient=transient
        )

    def error(
        self,
        answer: Answer,
        message: str | None,
        *,
        code: str | None = None,
        transient: bool | None = None,
        advice: str | None = None,
    ) -> DeliveryError:
        """A DeliveryError for a non-2xx ``answer``; ``message`` is the provider's own text.

        ``code``/``transient`` default to :func:`classify_status`; ``advice`` to :data:`ADVICE`.
        """
        default_code, default_transient = classify_status(answer.status)
        code = code or default_code
        detail = f"{self.label} answered HTTP {answer.status}"
        if message:
            # Redact before shortening: a cut could leave part of a secret unrecognisable.
            detail += f": {one_line(self.redact(str(message)))}"
        advice = advice if advice is not None else ADVICE.get(code)
        if advice:
            detail += f". {advice}"
        return DeliveryError(
            code,
            self.redact(detail),
            transient=default_transient if transient is None else transient,
        )

    def unexpected(self, answer: Answer, what: str) -> DeliveryError:
        """A 2xx answer we cannot use (the provider changed, or api_url points elsewhere)."""
        return DeliveryError(
            "unexpected_response",
            self.redact(
                f"{self.label} answered HTTP {answer.status} but {what}; check that api_url "
                f"points at the {self.label} API"
            ),
        )


def require_body(label: str, text: str | None, html: str | None) -> None:
    """The HTTP APIs all refuse a message with neither body; say so before sending."""
    if not text and not html:
        raise DeliveryError(
            "rejected", f"The message has neither a text nor an HTML body; {label} needs one"
        )
