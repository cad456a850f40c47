"""What a feature offers the composition root: its HTTP router, its job handlers and its
runners.

A new capability (messages, templates, automations, ...) is one entry in ``app.FEATURES``:
the composition root mounts every feature's ``router`` and gives the worker every feature's
``job_handlers``, so adding a feature never edits the wiring itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter

from getfluxly_server.delivery.base import BuildContext
from getfluxly_server.delivery.clients import ClientCache
from getfluxly_server.domain.clock import SYSTEM, Clock
from getfluxly_server.domain.identity import EventConsumer
from getfluxly_server.queue.kinds import JobHandler
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database


@dataclass(frozen=True)
class WorkerResources:
    """What the composition root lends a worker's job handlers: the database, the settings,
    the delivery context, the worker's cache of provider clients (kept between jobs),
    every feature's consumers of stitched events (given to the ingest's handlers) and the
    engine's clock (the system's; a test may lend a ``ManualClock``)."""

    db: Database
    settings: Settings
    build_context: BuildContext
    clients: ClientCache
    event_consumers: tuple[EventConsumer, ...] = field(default=())
    clock: Clock = SYSTEM


#: Builds a feature's job handlers from what the composition root lends it.
HandlerFactory = Callable[[WorkerResources], Iterable[JobHandler[Any]]]


class Runner(Protocol):
    """Background work of a feature that is not jobs (the delivery loop): started and
    stopped with the worker."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


#: Builds a feature's runners from what the composition root lends it.
RunnerFactory = Callable[[WorkerResources], Iterable[Runner]]

#: Builds a feature's consumers of stitched events (``domain.identity.EventConsumer``).
ConsumerFactory = Callable[[WorkerResources], Iterable[EventConsumer]]


@dataclass(frozen=True)
class Feature:
    """One capability: ``name`` (for logs and docs), the endpoints it serves (``router``,
    or None for a worker-only feature), its job handlers (``job_handlers``, or None), its
    other background work (``runners``, or None), run wherever the job worker runs, and what
    it does with each chunk of events as they are stitched to profiles (``event_consumers``,
    or None: segments and automations)."""

    name: str
    router: APIRouter | None = None
    job_handlers: HandlerFactory | None = None
    runners: RunnerFactory | None = None
    event_consumers: ConsumerFactory | None = None
