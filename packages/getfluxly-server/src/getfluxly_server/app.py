"""The composition root: settings → database → delivery context → HTTP app and workers.

Settings are built once (by the CLI) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from getfluxly_server import __version__, web
from getfluxly_server.api import (
    auth,
    automations,
    browser,
    dev,
    domain_check,
    errors,
    ingest,
    messages,
    openapi_docs,
    outbound_webhooks,
    profiles,
    projects,
    providers,
    segments,
    strict_input,
    subscription_groups,
    suppressions,
    templates,
    unsubscribe,
    webhooks,
)
from getfluxly_server.api import broadcasts as broadcasts_api
from getfluxly_server.api import tracking as tracking_api
from getfluxly_server.api.auth import KnownKeys
from getfluxly_server.api.body_limit import BodyLimit
from getfluxly_server.api.ratelimit import Buckets, RateLimiter
from getfluxly_server.delivery.base import BuildContext
from getfluxly_server.delivery.clients import ClientCache
from getfluxly_server.domain import delivery_jobs, ingest_jobs, tracking
from getfluxly_server.domain import messages as messages_domain
from getfluxly_server.domain.automations import segment_sync as automation_segment_sync
from getfluxly_server.domain.automations import triggers as automation_triggers
from getfluxly_server.domain.automations import webhooks as automation_webhooks
from getfluxly_server.domain.automations.runner import AutomationRunner
from getfluxly_server.domain.broadcasts import BroadcastRunner
from getfluxly_server.domain.clock import SYSTEM, Clock
from getfluxly_server.domain.delivery import Dispatcher, RetryRules
from getfluxly_server.domain.feedback import jobs as feedback_jobs
from getfluxly_server.domain.feedback.config import config_of as feedback_config
from getfluxly_server.domain.ingest import writer as ingest_writer
from getfluxly_server.domain.outbound import retention as outbound_retention
from getfluxly_server.domain.outbound import sender as outbound_sender
from getfluxly_server.domain.provider_limits import HOLDER_MAX, ProviderLimiter, SharedSendGate
from getfluxly_server.domain.segments import membership as segment_membership
from getfluxly_server.feature import Feature, Runner, WorkerResources
from getfluxly_server.queue.worker import Worker
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database

#: Every capability the server offers, once: the app mounts each router from here and the
#: worker runs each feature's job handlers.
FEATURES: tuple[Feature, ...] = (
    Feature("projects and keys", router=projects.router),
    Feature(
        "email providers",
        router=providers.router,
        job_handlers=lambda r: delivery_jobs.handlers(
            r.db, r.settings.keyring, r.build_context, r.clients
        ),
    ),
    Feature(
        "ingest",
        router=ingest.router,
        job_handlers=lambda r: ingest_jobs.handlers(r.db, r.event_consumers),
    ),
    Feature("message delivery", runners=lambda r: [delivery_loop(r)]),
    Feature("profiles", router=profiles.router),
    Feature("messages", router=messages.router),
    Feature("templates", router=templates.router),
    Feature("suppressions", router=suppressions.router),
    Feature(
        "feedback webhooks",
        router=webhooks.router,
        job_handlers=lambda r: feedback_jobs.handlers(r.db, feedback_config(r.settings)),
    ),
    Feature("dev mode", router=dev.router),
    Feature("browser script", router=browser.router),
    Feature("tracking", router=tracking_api.router),
    Feature("unsubscribe", router=unsubscribe.router),
    Feature("subscription groups", router=subscription_groups.router),
    Feature("domain check", router=domain_check.router),
    Feature(
        "outbound webhooks",
        router=outbound_webhooks.router,
        job_handlers=lambda r: outbound_sender.handlers(r.db, r.settings),
        runners=lambda r: [
            outbound_retention.Sweeper(r.db, timedelta(days=r.settings.webhook_log_retention_days))
        ],
    ),
    Feature(
        "segments",
        router=segments.router,
        job_handlers=lambda r: segment_membership.handlers(
            r.db, r.clock, segment_membership.RuleCache()
        ),
        runners=lambda r: [
            segment_membership.SegmentRunner(r.db, r.clock, r.settings.segment_pass_seconds)
        ],
        event_consumers=lambda r: [segment_membership.SegmentConsumer(r.clock)],
    ),
    Feature(
        "broadcasts",
        router=broadcasts_api.router,
        runners=lambda r: [BroadcastRunner(r.db, r.clock)],
    ),
    Feature(
        "automations",
        router=automations.router,
        job_handlers=lambda r: [
            *automation_webhooks.handlers(r.db, r.settings.network_policy),
            *automation_segment_sync.handlers(r.db, r.clock),
        ],
        runners=lambda r: [AutomationRunner(r.db, clock=r.clock)],
        event_consumers=lambda r: [automation_triggers.EventConsumer(r.clock)],
    ),
    Feature("dashboard", router=web.router),
)


def delivery_loop(resources: WorkerResources) -> Dispatcher:
    """The delivery workers of this process (``GETFLUXLY_DELIVERY_*``), sharing the job
    worker's provider clients, holding providers' limits in the database for every worker
    process (``domain.provider_limits``)."""
    settings = resources.settings
    return Dispatcher(
        resources.db,
        keyring=settings.keyring,
        build_context=resources.build_context,
        clients=resources.clients,
        # Providers' limits held across every worker process; slots leased as long as the
        # messages are (renewed with them), so a killed worker's come back as its messages do.
        gate=SharedSendGate(
            ProviderLimiter(resources.db),
            holder=f"{socket.gethostname()}:{os.getpid()}/g{secrets.token_hex(3)}"[:HOLDER_MAX],
            lease_seconds=settings.delivery_lease_seconds,
        ),
        rules=RetryRules(
            max_age=timedelta(seconds=settings.delivery_max_age_seconds),
            base_seconds=settings.delivery_backoff_base_seconds,
            cap_seconds=settings.delivery_backoff_cap_seconds,
        ),
        threads=settings.delivery_threads,
        batch=settings.delivery_batch,
        chunk=settings.delivery_chunk,
        lease_seconds=settings.delivery_lease_seconds,
        links=tracking.links_for(settings.public_url, settings.keyring),
    )


def build_context(settings: Settings) -> BuildContext:
    return BuildContext(
        timeout=settings.smtp_timeout,
        network=settings.network_policy,
        bounce_domain=settings.bounce_domain,
    )


def create_app(settings: Settings, db: Database, *, rate_buckets: Buckets | None = None) -> FastAPI:
    """The HTTP API. ``rate_buckets``: where the rate limits count (default: this process;
    ``api.ratelimit.SharedBuckets`` for processes forked from one another)."""
    writer = ingest_writer(db)
    send_writer = messages_domain.writer(db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # The server has finished its requests: nothing queued is still awaited, but let
        # the writers finish their groups before the database is closed under them.
        writer.close()
        send_writer.close()

    app = FastAPI(
        title="GetFluxly",
        version=__version__,
        description="Self-hosted lifecycle email: tenancy, keys and email providers.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.build_context = build_context(settings)
    errors.install(app)
    app.state.rate_limiter = RateLimiter(rate_buckets)
    app.state.known_keys = KnownKeys()
    app.state.ingest_writer = writer
    app.state.message_writer = send_writer
    # The ingest routes first: FastAPI tries an app's routes in order, matching each included
    # router's routes in turn, and ingest is what the server answers most (this took the
    # routing of POST /v1/events from 17 path matches to 3).
    for feature in sorted(FEATURES, key=lambda feature: feature.router is not ingest.router):
        if feature.router is not None:
            auth.guard(feature.router)  # authentication before the body (api/auth.py)
            openapi_docs.document_errors(feature.router)
            app.include_router(feature.router)

    @app.get("/healthz", tags=["health"])
    def health() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    # Middleware, the last added outermost: the body cap first, then paths and queries the
    # databases cannot take, then CORS for the ingest paths (browsers post events from
    # customer sites), then (added by errors.install) the catch-all for unexpected errors.
    app.add_middleware(browser.IngestCORS)
    app.add_middleware(strict_input.StrictInput)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


class DeliveryWorker(Worker):
    """The worker, holding this process's provider clients (one per provider, kept between
    messages) and the features' runners (the delivery loop), started and stopped with it;
    the clients are closed once everything has stopped."""

    def __init__(
        self, *args: Any, clients: ClientCache, runners: list[Runner], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.clients = clients
        self.runners = runners

    def start(self) -> None:
        super().start()
        for runner in self.runners:
            runner.start()

    def stop(self, timeout: float = 10.0) -> None:
        for runner in self.runners:
            runner.stop(timeout)
        super().stop(timeout)
        self.clients.close()


def create_worker(
    settings: Settings, db: Database, *, threads: int | None = None, clock: Clock = SYSTEM
) -> Worker:
    """The worker of this process: every feature's job handlers, runners and event
    consumers. ``clock``: the engine's time (a test lends a ``ManualClock``)."""
    clients = ClientCache()
    resources = WorkerResources(db, settings, build_context(settings), clients, clock=clock)
    consumers = tuple(
        consumer
        for feature in FEATURES
        if feature.event_consumers is not None
        for consumer in feature.event_consumers(resources)
    )
    resources = replace(resources, event_consumers=consumers)
    return DeliveryWorker(
        db,
        [
            handler
            for feature in FEATURES
            if feature.job_handlers is not None
            for handler in feature.job_handlers(resources)
        ],
        lease_seconds=settings.job_lease_seconds,
        threads=threads or settings.worker_threads,
        poll_seconds=settings.job_poll_seconds,
        backoff_cap_seconds=settings.job_backoff_cap_seconds,
        retention=timedelta(days=settings.job_retention_days),
        clients=clients,
        runners=[
            runner
            for feature in FEATURES
            if feature.runners is not None
            for runner in feature.runners(resources)
        ],
    )
