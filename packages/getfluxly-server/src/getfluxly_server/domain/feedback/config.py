"""What feedback takes from the server's settings, built once by whoever runs it (the API
for the webhook edge, the worker for processing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from getfluxly_server.domain.feedback.record import FeedbackRules
from getfluxly_server.domain.feedback.relays import Relay, build
from getfluxly_server.domain.feedback.sns import SnsPolicy

if TYPE_CHECKING:
    from getfluxly_server.settings import Settings


@dataclass(frozen=True)
class FeedbackConfig:
    """The suppression rules, where SNS may be fetched from, and every relay's adapter."""

    rules: FeedbackRules
    sns: SnsPolicy
    relays: Mapping[str, Relay]


def config_of(settings: Settings) -> FeedbackConfig:
    """``GETFLUXLY_SOFT_BOUNCE_*`` and ``GETFLUXLY_SNS_*`` as feedback uses them."""
    sns = SnsPolicy(
        cert_hosts=settings.sns_cert_hosts,
        subscribe_hosts=settings.sns_subscribe_hosts,
        ca_file=settings.sns_ca_file,
    )
    rules = FeedbackRules(
        soft_bounce_limit=settings.soft_bounce_limit,
        soft_bounce_window=timedelta(days=settings.soft_bounce_window_days),
    )
    return FeedbackConfig(rules=rules, sns=sns, relays=build(sns))
