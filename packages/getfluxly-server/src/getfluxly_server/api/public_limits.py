"""Rate limits of the routes that take no key (the token or signature in the request is the
credential), counted per client address in the same buckets as every other limit
(api/ratelimit.py, api/client_address.py); over a limit the answer is 429 ``rate_limited``
with ``Retry-After``.

- The public pages (the open pixel, the click redirect, unsubscribe and the preference
  page): every request spends from ``public:<address>``
  (``GETFLUXLY_PUBLIC_RATE_LIMIT_*``), so one address cannot make the server verify tokens
  and write tracking rows without end.
- Feedback webhooks: only posts that fail (401: no secret, or it does not verify; 404: an
  unknown relay or project) spend, from ``webhook-failures:<project>:<address>`` (404s
  from ``webhook-failures:?:<address>``, so made-up project ids bring no fresh budget)
  (``GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_*``). An address that has used its budget is
  refused before anything is read or verified; a relay posting validly from elsewhere is
  not affected, and a relay whose posts verify never spends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Depends, Request

from getfluxly_server.api.client_address import client_address
from getfluxly_server.api.deps import settings
from getfluxly_server.api.ratelimit import Rate, RateLimiter
from getfluxly_server.domain.errors import DomainError

#: Webhook answers that spend from the failure budget: the post did not verify (401), or
#: named a relay or project that does not exist (404).
_FAILURES = {"unauthenticated": "", "not_found": "?"}


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def _address(request: Request) -> str:
    return client_address(request.scope, settings(request).trusted_proxies)


async def public_visitor(request: Request) -> None:
    """A request to a public page: one token from its address's bucket, or 429."""
    config = settings(request)
    rate = Rate(config.public_rate_per_second, config.public_rate_burst)
    _limiter(request).take(f"public:{_address(request)}", rate, "this address")


#: The dependency of every public page's route.
PublicVisitor = Depends(public_visitor)


@contextmanager
def webhook_failures(request: Request, project_id: str) -> Iterator[None]:
    """Around a webhook post's verification: refused (429) at once if its address has used
    up its failure budget for this project (or for unknown ones); a 401 or 404 raised
    inside spends from it."""
    config = settings(request)
    rate = Rate(config.webhook_failure_rate_per_second, config.webhook_failure_rate_burst)
    limiter = _limiter(request)
    address = _address(request)
    buckets = {code: f"webhook-failures:{scope or project_id}:{address}"
               for code, scope in _FAILURES.items()}  # fmt: skip
    what = "this address's webhook posts after failed verifications"
    for bucket in buckets.values():
        limiter.check(bucket, rate, what)
    try:
        yield
    except DomainError as exc:
        if exc.code in buckets:
            limiter.spend(buckets[exc.code], rate)
        raise
