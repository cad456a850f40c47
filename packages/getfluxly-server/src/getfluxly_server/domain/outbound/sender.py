"""The job that sends one delivery to its endpoint.

Each attempt: the body built from the event as it is now, signed with the endpoint's secret
(Standard Webhooks headers, a fresh timestamp), POSTed to the endpoint's current URL with
the multi-tenant network guard applied at connect time on the resolved address (the same
policy, allow-list included, as email providers' HTTP APIs: ``delivery.netguard``); no
redirect followed (it could lead past the guard); at most :data:`EXCERPT_BYTES` of the answer
read. A 2xx answer succeeds; anything else (another status, no answer, a refused connection)
is logged and retried after a capped, fully jittered backoff (``GETFLUXLY_WEBHOOK_BACKOFF_*``;
a ``Retry-After`` of a 429 or 503 is honoured up to the cap) until :data:`MAX_ATTEMPTS`,
then the delivery is ``failed``.

The log (``outbound_attempts``) keeps per attempt: the status code, our own one-line error
(the code of ``delivery.http.transport_code``: ``connection_refused``, ``timeout``,
``dns_failed``, ``tls_failed``; never the secret, never the low-level reason, which could
tell a filtered port from a refused one) and a short printable excerpt of the answer's body.
Delivery is at least once: a worker that dies after the POST and before the log sends again,
with the same ``webhook-id``, which receivers de-duplicate on. A failure in making the
request (a bug: the body, the signature) is logged and counts as a failed attempt like any
other, so it too ends ``failed`` after the last; a delivery whose job ends without it (a
worker killed again and again) is settled by domain/outbound/recovery.py.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from getfluxly_server.crypto import KeyringError
from getfluxly_server.delivery.http import USER_AGENT, one_line, retry_after, transport_code
from getfluxly_server.delivery.netguard import NetworkPolicy
from getfluxly_server.domain.outbound import events, signing
from getfluxly_server.domain.outbound.endpoints import secret_of
from getfluxly_server.queue.kinds import JobHandler, JobKind, JobPayload
from getfluxly_server.queue.retry import Permanent, Retry, RetryPolicy, backoff
from getfluxly_server.settings import Settings
from getfluxly_server.storage import outbound_webhooks as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import now

log = logging.getLogger("getfluxly.webhooks.outbound")

#: Attempts of one delivery, the first included.
MAX_ATTEMPTS = 8
#: How much of an answer is read, and how much of it the log keeps.
EXCERPT_BYTES = 1024
EXCERPT_CHARS = 200


class Deliver(JobPayload):
    delivery_id: str


#: At most two sends a worker process at once: a slow customer endpoint (up to the timeout
#: each) never takes every worker thread.
DELIVER = JobKind(
    "outbound_webhooks.deliver",
    Deliver,
    concurrency=2,
    retry=RetryPolicy(max_attempts=MAX_ATTEMPTS),
)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # built once: loading the CA bundle is slow


class Poster:
    """POSTs signed bodies under a network policy; one short-lived client per request (an
    endpoint is not a provider: nothing is worth keeping warm, nothing is left open)."""

    def __init__(self, policy: NetworkPolicy, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout

    def post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        started = time.perf_counter()
        options = self.policy.http_client_options(_tls_context())
        try:
            with (
                httpx.Client(timeout=self.timeout, follow_redirects=False, **options) as client,
                client.stream("POST", url, headers=headers, content=body) as response,
            ):
                read = bytearray()
                for chunk in response.iter_bytes():
                    read += chunk
                    if len(read) >= EXCERPT_BYTES:
                        break
                return Attempt(
                    status_code=response.status_code,
                    error=None if response.is_success else f"HTTP {response.status_code}",
                    excerpt=_excerpt(bytes(read)),
                    retry_after=retry_after(response.headers),
                    duration_ms=_ms(started),
                )
        except httpx.HTTPError as exc:
            code, _ = transport_code(exc)
            host = httpx.URL(url).host
            log.info("webhook POST to %s failed: %s (%s)", host, code, one_line(repr(exc)))
            return Attempt(None, f"{code}: no answer from {host}", None, None, _ms(started))


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: the status (None: no answer), our error (None: success), an
    excerpt of the answer, its Retry-After, how long it took."""

    status_code: int | None
    error: str | None
    excerpt: str | None
    retry_after: float | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _excerpt(body: bytes) -> str | None:
    text = one_line(body.decode("utf-8", "replace"), EXCERPT_CHARS)
    return text or None


def handlers(
    db: Database,
    settings: Settings,
    *,
    poster: Poster | None = None,
    clock: Callable[[], datetime] = now,
    rng: random.Random | None = None,
) -> list[JobHandler[Any]]:
    """The sender, bound to this process's database, keys and network policy."""
    post = poster or Poster(settings.network_policy, settings.webhook_timeout_seconds)
    jitter = rng or random.Random()  # noqa: S311 - jitter, not secrets

    def deliver(payload: Deliver) -> dict[str, Any]:
        with db.read() as session:
            found = store.delivery(session, payload.delivery_id)
            if found is None:  # the endpoint or the event was deleted meanwhile
                return {"sent": False, "reason": "gone"}
            delivery, webhook, event = found
            if delivery.status != store.PENDING:
                return {"sent": False, "reason": delivery.status}
            attempt = delivery.attempts + 1
            url = webhook.url
            try:
                body: bytes | None = events.body(event)
            except Exception:  # a bug must not leave the delivery pending: a failed attempt
                log.exception("webhook delivery %s: its body could not be built", delivery.id)
                body = None
            try:
                secret: str | None = secret_of(webhook, settings.keyring)
            except KeyringError:
                secret = None
        if body is None:
            outcome = Attempt(
                None, "internal_error: the event's body could not be built (logged)", None,
                None, 0,
            )  # fmt: skip
        elif secret is None:
            outcome = Attempt(
                None, "secret_unreadable: the endpoint's secret cannot be decrypted with "
                "GETFLUXLY_ENCRYPTION_KEYS (restore the key)", None, None, 0,
            )  # fmt: skip
        else:
            try:
                stamp = int(clock().timestamp())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    **signing.headers(secret, delivery.id, stamp, body),
                }
                outcome = post.post(url, headers, body)
            except Exception as exc:  # a bug here is an attempt that failed, logged as such
                log.exception("webhook delivery %s: the request failed to be made", delivery.id)
                outcome = Attempt(
                    None, f"internal_error: the request could not be made ({type(exc).__name__}; "
                    "logged)", None, None, 0,
                )  # fmt: skip
        last = attempt >= MAX_ATTEMPTS
        status = store.SUCCEEDED if outcome.ok else store.FAILED if last else store.PENDING
        with db.transaction() as session:
            store.record_attempt(
                session, delivery.id, attempt=attempt, status=status,
                status_code=outcome.status_code, error=outcome.error, excerpt=outcome.excerpt,
                duration_ms=outcome.duration_ms, at=clock(),
            )  # fmt: skip
        if outcome.ok:
            return {"sent": True, "attempt": attempt, "status_code": outcome.status_code}
        if last:
            raise Permanent(f"attempt {attempt} of {MAX_ATTEMPTS} failed: {outcome.error}")
        delay = backoff(
            attempt,
            base=settings.webhook_backoff_base_seconds,
            cap=settings.webhook_backoff_cap_seconds,
            rng=jitter,
        )
        if outcome.retry_after is not None and outcome.status_code in (429, 503):
            delay = max(delay, min(outcome.retry_after, settings.webhook_backoff_cap_seconds))
        raise Retry(f"attempt {attempt} failed: {outcome.error}", delay=delay)

    return [DELIVER.handler(deliver)]
