"""What a provider's answer means for the ledger: a :class:`~getfluxly_server.storage.outbox.
Verdict` per attempted message.

- ACCEPTED -> ``sent``: ``last_reply`` is the relay's reply (its queue id in
  ``provider_message_id``), the Message-ID header in ``smtp_message_id``; recipients refused
  at RCPT are listed in the history detail and in ``last_reply``.
- TRANSIENT (4xx, timeout, network failure before the message went out, HTTP 429/5xx) ->
  ``deferred``, due again after capped exponential backoff with full jitter
  (:func:`getfluxly_server.queue.retry.backoff`; a provider's own ``Retry-After`` wins), or
  ``failed`` once the message is older than the maximum age (72 hours by default, as MTAs).
- PERMANENT (5xx, every recipient refused, bad credentials) -> ``failed`` at once.
- UNKNOWN (the connection was lost after the message was handed over) -> ``unknown``: never
  resent automatically.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from getfluxly_server.delivery.base import DeliveryResult, Outcome
from getfluxly_server.queue.retry import backoff
from getfluxly_server.storage.models import MessageStatus
from getfluxly_server.storage.outbox import ClaimedMessage, Verdict


@dataclass(frozen=True)
class RetryRules:
    """How deferred messages are retried (settings ``GETFLUXLY_DELIVERY_*``)."""

    max_age: timedelta = timedelta(hours=72)
    base_seconds: float = 60.0
    cap_seconds: float = 3600.0


def verdict(
    message: ClaimedMessage,
    result: DeliveryResult,
    moment: datetime,
    rules: RetryRules,
    rng: random.Random,
) -> Verdict:
    """The verdict on ``message`` after its attempt (its ``attempts`` before it) ended with
    ``result`` at ``moment``."""
    if result.outcome is Outcome.ACCEPTED:
        reply = result.reply
        if result.refused:
            refused = "; ".join(f"{address}: {why}" for address, why in result.refused.items())
            reply = f"{reply} (refused recipients: {refused})"
        return Verdict(
            message.id, MessageStatus.SENT.value, reply, last_reply=reply,
            provider_message_id=result.provider_message_id,
            smtp_message_id=result.smtp_message_id, sent_at=moment,
        )  # fmt: skip
    detail = _describe(result)
    if result.outcome is Outcome.UNKNOWN:
        return Verdict(message.id, MessageStatus.UNKNOWN.value, detail, last_reply=detail)
    if result.outcome is Outcome.PERMANENT:
        return Verdict(message.id, MessageStatus.FAILED.value, detail, last_reply=detail)
    expires = message.created_at + rules.max_age
    if moment >= expires:
        hours = rules.max_age.total_seconds() / 3600
        gave_up = f"{detail} (given up: still failing after {hours:g} hours)"
        return Verdict(message.id, MessageStatus.FAILED.value, gave_up, last_reply=detail)
    if result.retry_after is not None:
        delay = min(result.retry_after, rules.cap_seconds)
    else:
        attempt = message.attempts + 1
        delay = backoff(attempt, base=rules.base_seconds, cap=rules.cap_seconds, rng=rng)
    due = min(moment + timedelta(seconds=delay), expires)
    return Verdict(message.id, MessageStatus.DEFERRED.value, detail, last_reply=detail, due_at=due)


def _describe(result: DeliveryResult) -> str:
    """The reply when there is one, else the code and what happened."""
    parts = [p for p in (result.reply, result.detail) if p]
    text = " - ".join(dict.fromkeys(parts)) or (result.code or result.outcome.value)
    if result.refused:
        text += "; refused: " + "; ".join(f"{a}: {r}" for a, r in result.refused.items())
    return text
