"""The ``webhook`` step's call: a job queued in the run's transaction (so a run that moves
past the step has queued it exactly once), POSTed by a worker, retried with backoff on a
network error or a 5xx/429 answer.

The request goes through the server's network policy (``delivery/netguard.py``): with the
multi-tenant guard on, a URL on a private or loopback address is refused as a refused
connection is. Redirects are not followed. The body is the step's ``body`` as JSON (by
default ``{"automation_id", "step_id", "run_id", "profile_id", "traits"}``); headers
``X-GetFluxly-Automation-Id`` and ``Idempotency-Key`` (``run_id:step_id``, the same for
every retry) let the receiver drop a repeat.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx
import orjson
from pydantic import JsonValue

from getfluxly_server.delivery.netguard import NetworkPolicy
from getfluxly_server.queue.kinds import JobHandler, JobKind, JobPayload
from getfluxly_server.queue.retry import Permanent, RetryPolicy
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Profile

TIMEOUT_SECONDS = 10.0


class CallWebhook(JobPayload):
    project_id: str
    automation_id: str
    run_id: str
    step_id: str
    profile_id: str
    url: str
    body: JsonValue = None


WEBHOOK = JobKind(
    "automations.webhook", CallWebhook, retry=RetryPolicy(max_attempts=8, base_seconds=5.0)
)


@functools.cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def handlers(db: Database, policy: NetworkPolicy) -> list[JobHandler[Any]]:
    def call(payload: CallWebhook) -> dict[str, Any]:
        body: Any = payload.body
        if body is None:
            with db.read() as session:
                profile = session.get(Profile, payload.profile_id)
                traits = dict(profile.traits) if profile and not profile.erased_at else {}
            body = {
                "automation_id": payload.automation_id, "step_id": payload.step_id,
                "run_id": payload.run_id, "profile_id": payload.profile_id, "traits": traits,
            }  # fmt: skip
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GetFluxly-Automations",
            "X-GetFluxly-Automation-Id": payload.automation_id,
            "Idempotency-Key": f"{payload.run_id}:{payload.step_id}",
        }
        options = policy.http_client_options(_tls())
        try:
            with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, **options) as client:
                answer = client.post(payload.url, content=orjson.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"webhook {payload.url}: {type(exc).__name__}") from None
        if answer.status_code >= 500 or answer.status_code == 429:
            raise RuntimeError(f"webhook {payload.url} answered {answer.status_code}")
        if answer.status_code >= 400:
            raise Permanent(f"webhook {payload.url} answered {answer.status_code}")
        return {"status": answer.status_code}

    return [WEBHOOK.handler(call)]
