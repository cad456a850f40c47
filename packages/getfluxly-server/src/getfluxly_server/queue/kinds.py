"""Job kinds: each a name, a typed payload, a queue, a concurrency and a retry policy.

A feature declares its kinds next to the code that enqueues them, and its handlers next to
the code they run; neither imports the worker::

    class ProcessEvents(JobPayload):
        project_id: str

    PROCESS_EVENTS = JobKind("events.process", ProcessEvents)

    PROCESS_EVENTS.enqueue(session, ProcessEvents(project_id=project.id))   # in a transaction
    PROCESS_EVENTS.handler(lambda payload: {"processed": process(payload.project_id)})

The composition root hands the worker the list of handlers; the worker's registry (one
handler per kind) is built from it. Payloads are pydantic models (frozen, unknown fields
refused), stored as the job's JSON and validated again when the job runs: a payload that no
longer fits its model fails that job with the validation's message, not the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session

from getfluxly_server.queue.retry import RetryPolicy
from getfluxly_server.storage import jobs
from getfluxly_server.storage.models import DEFAULT_PRIORITY


class Queue(IntEnum):
    """The queues, as priorities: of the jobs due, a worker claims the lowest value first.

    Transactional mail (a password reset, a test send someone waits for) goes before the
    default work (event processing, erasures), which goes before bulk fan-out (broadcasts),
    so 100,000 queued broadcast messages never delay a transactional one by more than one
    claim. Gaps leave room for queues in between.
    """

    TRANSACTIONAL = 0
    DEFAULT = DEFAULT_PRIORITY
    BULK = 200


class JobPayload(BaseModel):
    """Base of every payload: immutable, unknown fields refused. Carry ids, not objects: the
    job reads current state when it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=JobPayload)

#: What a handler returns: a JSON object recorded as the job's result, or None.
Result = Mapping[str, Any] | None


class InvalidPayload(ValueError):  # noqa: N818 - reads as what the job is
    """A stored payload does not fit its kind's model; the message says which fields."""


@dataclass(frozen=True)
class JobKind(Generic[P]):
    """A kind of job. ``concurrency``: at most this many of the kind run at once in one worker
    process (None: as many as the worker has threads), so a kind that holds scarce things
    (SMTP connections, a provider's rate) cannot take every thread."""

    name: str
    payload: type[P]
    queue: Queue = Queue.DEFAULT
    concurrency: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if not 0 < len(self.name) <= 64:  # the column's width
            raise ValueError(f"job kind names are 1 to 64 characters: {self.name!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"{self.name}: concurrency must be at least 1")

    def enqueue(self, session: Session, payload: P, *, run_at: datetime | None = None) -> int:
        """Add a job in the caller's transaction (visible to workers once it commits); its id."""
        job = jobs.enqueue(
            session, self.name, self.dump(payload), run_at=run_at,
            max_attempts=self.retry.max_attempts, priority=int(self.queue),
        )  # fmt: skip
        return job.id

    def enqueue_many(
        self, session: Session, payloads: Iterable[P], *, run_at: datetime | None = None
    ) -> int:
        """Add a job per payload in one set-based insert (fan-out); how many."""
        return jobs.enqueue_many(
            session, self.name, (self.dump(p) for p in payloads), run_at=run_at,
            max_attempts=self.retry.max_attempts, priority=int(self.queue),
        )  # fmt: skip

    def enqueue_once(
        self, session: Session, payload: P, unique_key: str, *, run_at: datetime | None = None
    ) -> bool:
        """Add a job (due at ``run_at``, default now) unless one with ``unique_key`` is queued
        already (see storage/jobs.py); whether it added one."""
        return jobs.enqueue_once(
            session, self.name, self.dump(payload), unique_key,
            max_attempts=self.retry.max_attempts, priority=int(self.queue), run_at=run_at,
        )  # fmt: skip

    def dump(self, payload: P) -> dict[str, Any]:
        """The payload as stored: a JSON object. Refuses a payload of another kind's model."""
        if type(payload) is not self.payload:
            raise TypeError(
                f"{self.name} takes a {self.payload.__name__} payload, not {type(payload).__name__}"
            )
        return payload.model_dump(mode="json")

    def load(self, data: Mapping[str, Any]) -> P:
        """The stored payload as its model; :class:`InvalidPayload` saying what is wrong."""
        try:
            return self.payload.model_validate(data)
        except ValidationError as exc:
            raise InvalidPayload(f"invalid payload for {self.name}: {_summary(exc)}") from None

    def handler(self, run: Callable[[P], Result]) -> JobHandler[P]:
        """``run`` bound to this kind, for the worker's list."""
        return JobHandler(self, run)


@dataclass(frozen=True)
class JobHandler(Generic[P]):
    """A kind and the function that runs its jobs (given the typed payload)."""

    kind: JobKind[P]
    run: Callable[[P], Result]

    def __call__(self, data: Mapping[str, Any]) -> Result:
        """Run a job from its stored payload (:class:`InvalidPayload` if it does not fit)."""
        return self.run(self.kind.load(data))


class Registry(Mapping[str, JobHandler[Any]]):
    """The handlers a worker runs, by kind name: one each."""

    def __init__(self, handlers: Iterable[JobHandler[Any]]) -> None:
        self._handlers: dict[str, JobHandler[Any]] = {}
        for handler in handlers:
            name = handler.kind.name
            if name in self._handlers:
                raise ValueError(f"two handlers for job kind {name!r}")
            self._handlers[name] = handler

    def __getitem__(self, name: str) -> JobHandler[Any]:
        return self._handlers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


def _summary(exc: ValidationError) -> str:
    """ "field: message; ..." without the input values (a payload may hold personal data)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "(payload)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
