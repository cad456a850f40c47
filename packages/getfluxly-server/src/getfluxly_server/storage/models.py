"""The tables, as SQLAlchemy 2 mapped classes. Migrations (``migrations/``) create them."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no I, L, O, U


#: The longest display name (a provider's display_name and from_name): the API's models and
#: the columns both read it from here, so what the API accepts always fits.
NAME_MAX = 200
#: The longest email address (RFC 5321: 64 + 1 + 255, rounded as everyone does).
ADDRESS_MAX = 320


#: RFC 4648 base32 (what ``base64.b32encode`` writes) to :data:`_ALPHABET`, letter for letter.
_TO_ALPHABET = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET)


def new_id(prefix: str) -> str:
    """``prefix_`` and 20 random base32 characters (100 bits): unguessable, URL-safe."""
    # 15 random bytes are 24 base32 characters of 5 random bits each; the first 20 carry 100
    # bits. One call to the system's generator, where a choice per character made 20 (bulk
    # enqueue makes thousands of ids at once).
    encoded = base64.b32encode(secrets.token_bytes(15)).decode("ascii")
    return f"{prefix}_{encoded[:20].translate(_TO_ALPHABET)}"


def now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on SQLite (which drops zones) too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=now)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    #: The provider the project's mail goes through unless a call or step names another: the
    #: first one created, changed with ``PATCH /v1/projects/{id}``. No foreign key (projects
    #: and providers would point at each other); the domain clears it when that provider goes.
    default_provider_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    #: The IANA time zone automations use for a profile without a valid ``timezone`` trait
    #: (delays until a time of day, quiet hours); None: UTC.
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (Index("ix_projects_workspace", "workspace_id"),)


class ApiKey(Base):
    """A key, stored only as its SHA-256 (keys are 190-bit random: no slow hash needed)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # workspace | secret | publishable
    name: Mapped[str] = mapped_column(String(200), default="")
    #: The visible start of the key (``gflux_secret_AbCd``), to tell keys apart in lists.
    hint: Mapped[str] = mapped_column(String(40))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_api_keys_workspace", "workspace_id"),)


class EmailProvider(Base):
    __tablename__ = "email_providers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))  # smtp | ses | resend | mailgun | ...
    display_name: Mapped[str] = mapped_column(String(NAME_MAX))
    from_email: Mapped[str] = mapped_column(String(ADDRESS_MAX))
    from_name: Mapped[str | None] = mapped_column(String(NAME_MAX))
    reply_to: Mapped[str | None] = mapped_column(String(ADDRESS_MAX))
    #: Non-secret connection settings (host, port, TLS mode, username, region, ...).
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The secret (password, API key), AES-GCM encrypted with the keyring; never returned.
    secret: Mapped[str] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Limits held across every worker process (None: no limit of that kind).
    max_connections: Mapped[int | None] = mapped_column(default=None)
    rate_per_second: Mapped[float | None] = mapped_column(default=None)
    rate_per_hour: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)

    __table_args__ = (Index("ix_email_providers_project", "project_id"),)


class JobStatus(StrEnum):
    """Where a job is in its life. Stored as these strings (the column is plain text), so
    rows written before the enum existed read back unchanged."""

    QUEUED = "queued"  # waiting for its run_at
    RUNNING = "running"  # leased to a worker until lease_until
    DONE = "done"  # succeeded (or folded into an equal queued job)
    FAILED = "failed"  # failed for good: attempts used up, a permanent error, a bad payload


class _JobStatusType(TypeDecorator[JobStatus]):
    """The status column: text in the database, :class:`JobStatus` in Python."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: JobStatus | None, dialect: Dialect) -> str | None:
        return None if value is None else JobStatus(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> JobStatus | None:
        return None if value is None else JobStatus(value)


#: The predicates of the partial indexes, as literal SQL: PostgreSQL matches a query (or an
#: ON CONFLICT target) to a partial index only by the text of its predicate.
QUEUED = text("status = 'queued'")
RUNNING = text("status = 'running'")
#: Finished for good (what retention deletes).
FINISHED_SQL = text("status IN ('done', 'failed')")

#: The priority of jobs enqueued without one (the "default" queue of queue/kinds.py).
DEFAULT_PRIORITY = 100


class Job(Base):
    """A durable job. Visible to workers once the transaction that enqueued it commits."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: Set for jobs that need run only once however often they are asked for (while queued).
    unique_key: Mapped[str | None] = mapped_column(String(128), default=None)
    #: Ids, never objects: the job reads current state when it runs.
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[JobStatus] = mapped_column(_JobStatusType(), default=JobStatus.QUEUED)
    #: Lower runs first: due jobs are claimed by priority, then by run_at. Copied from the
    #: kind's queue at enqueue, so SQL can order jobs without knowing the kinds.
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=DEFAULT_PRIORITY, server_default=text(str(DEFAULT_PRIORITY))
    )
    run_at: Mapped[datetime] = mapped_column(default=now)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        # Claiming walks this in order (priority, run_at, id) and stops after n due rows: the
        # one transactional job behind 100,000 queued bulk ones is the first entry it reads.
        Index(
            "ix_jobs_due",
            "priority",
            "run_at",
            "id",
            sqlite_where=QUEUED,
            postgresql_where=QUEUED,
        ),
        # Leases that ran out (a crashed worker's jobs), found without reading queued rows.
        Index("ix_jobs_leased", "lease_until", sqlite_where=RUNNING, postgresql_where=RUNNING),
        # Retention deletes finished jobs by age.
        Index(
            "ix_jobs_finished",
            "finished_at",
            sqlite_where=FINISHED_SQL,
            postgresql_where=FINISHED_SQL,
        ),
        # One queued job per unique_key (enqueue_once is an INSERT ... ON CONFLICT on it).
        Index(
            "ux_jobs_queued_unique",
            "unique_key",
            unique=True,
            sqlite_where=QUEUED,
            postgresql_where=QUEUED,
        ),
    )


class DevMessage(Base):
    """A message the dev-mode SMTP catcher received (dev mode only)."""

    __tablename__ = "dev_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    #: Whose mail it is: the workspace the sender logged in as, else the dev install's own.
    workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE", name="fk_dev_messages_workspace")
    )
    received_at: Mapped[datetime] = mapped_column(default=now)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_tos: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    #: The ledger message it is (its ``X-GetFluxly-Message-Id`` header), if it is one.
    getfluxly_message_id: Mapped[str | None] = mapped_column(String(32), default=None)

    __table_args__ = (
        Index("ix_dev_messages_workspace", "workspace_id", "id"),
        Index("ix_dev_messages_ledger", "workspace_id", "getfluxly_message_id"),
    )


class Profile(Base):
    """One person in a project. Merged profiles point at their survivor and are not used."""

    __tablename__ = "profiles"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    merged_into: Mapped[str | None] = mapped_column(String(32), default=None)
    merged_at: Mapped[datetime | None] = mapped_column(default=None)
    erased_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        Index("ix_profiles_project", "project_id", "created_at"),
        # Who was merged into these profiles (merges, segment exits): few rows have it.
        Index(
            "ix_profiles_merged_into",
            "merged_into",
            sqlite_where=text("merged_into IS NOT NULL"),
            postgresql_where=text("merged_into IS NOT NULL"),
        ),
        # The segments' periodic pass: profiles changed since its last run.
        Index("ix_profiles_updated", "project_id", "updated_at"),
    )


class Identity(Base):
    """An id a person is known by: a device (anonymous_id) or your user id (external_id)."""

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # anonymous_id | external_id
    value: Mapped[str] = mapped_column(String(255))
    profile_id: Mapped[str] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint("project_id", "kind", "value", name="uq_identities_value"),
        Index("ix_identities_profile", "profile_id"),
    )


class Event(Base):
    """An event as accepted. Stored (and acknowledged) before it is processed."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))  # track | identify
    name: Mapped[str | None] = mapped_column(String(64))
    anonymous_id: Mapped[str | None] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timestamp: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=now)
    profile_id: Mapped[str | None] = mapped_column(String(32), default=None)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        UniqueConstraint("project_id", "message_id", name="uq_events_message"),
        Index("ix_events_unprocessed", "project_id", "processed_at", "id"),
        Index("ix_events_profile", "profile_id", "timestamp"),
    )


class IdempotentResponse(Base):
    """The response first given to an ``X-Idempotency-Key``, replayed for 24 hours.

    Keys are per project and per kind of key (``secret`` | ``publishable``): a page visitor
    holding the publishable key cannot claim a key the server integration uses later.
    ``body_hash`` (SHA-256 of the request body) tells a retry from a different request
    reusing the key; NULL for answers recorded before it existed (replayed as before).
    """

    __tablename__ = "idempotent_responses"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    key_kind: Mapped[str] = mapped_column(
        String(16), primary_key=True, server_default=text("'secret'")
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[int] = mapped_column()
    body: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=now)


class Erasure(Base):
    """The audit record of an erasure: what was erased and why, never what it contained."""

    __tablename__ = "erasures"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    profile_ids: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(255))
    profiles_targeted: Mapped[int] = mapped_column()
    events_targeted: Mapped[int] = mapped_column()
    requested_at: Mapped[datetime] = mapped_column(default=now)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


#: A template not deleted (partial-index predicate; named here because ``Template.text`` is
#: a column, which hides SQLAlchemy's ``text()`` inside the class body).
LIVE_SQL = text("deleted_at IS NULL")


class Template(Base):
    """A message template as its author saved it (Liquid in every field), plus ``html``
    compiled from ``mjml`` at save. ``version`` grows with every edit, so a worker's cache of
    compiled templates keys on (id, version). Deleted templates are kept (``deleted_at``) for
    the messages already queued with them; their names are free for new templates."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    kind: Mapped[str] = mapped_column(String(16), default="marketing")  # | transactional
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    mjml: Mapped[str | None] = mapped_column(Text, default=None)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        # A live template's name is unique in its project (partials are included by name).
        Index(
            "ux_templates_name",
            "project_id",
            "name",
            unique=True,
            sqlite_where=LIVE_SQL,
            postgresql_where=LIVE_SQL,
        ),
    )


class MessageStatus(StrEnum):
    """Where a message is (engine spec section 2). The first seven are the ledger's own; the
    rest come later from feedback."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


#: Messages a delivery worker may claim (partial-index predicate, literal SQL as above).
PENDING_SQL = text("status IN ('queued', 'deferred', 'sending')")


class MessagePriority(IntEnum):
    """A message's claim order (``messages.priority``), lowest first: by origin."""

    TRANSACTIONAL = 0
    AUTOMATION = 1
    BROADCAST = 2


class Message(Base):
    """One message: the ledger row, written before any attempt and kept after.

    ``due_at`` is when a worker may next attempt it (NULL once it needs no attempt);
    ``locked_by``/``lease_until`` hold it while a worker sends it. Origin: ``api`` (a
    transactional call), ``automation`` (with ``automation_id``, ``step_id``) or
    ``broadcast`` (``broadcast_id``). ``idempotency_key`` is unique per project: the caller's
    ``Idempotency-Key``, or one derived from the origin (automation step + profile + run,
    broadcast + profile), so an origin that runs twice records one message.
    """

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.QUEUED.value)
    to_email: Mapped[str] = mapped_column(String(ADDRESS_MAX))
    profile_id: Mapped[str | None] = mapped_column(String(32), default=None)
    provider_id: Mapped[str | None] = mapped_column(String(32), default=None)
    template_id: Mapped[str | None] = mapped_column(String(32), default=None)
    template_version: Mapped[int | None] = mapped_column(default=None)
    transactional: Mapped[bool] = mapped_column(default=True)
    #: Inline content of the call (Liquid), or what was rendered once it was sent.
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    html: Mapped[str | None] = mapped_column(Text, default=None)
    text_body: Mapped[str | None] = mapped_column("text", Text, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    origin: Mapped[str] = mapped_column(String(16), default="api")
    #: Claim order among due messages, lowest first (:class:`MessagePriority`): a broadcast
    #: queued earlier never holds back a password reset.
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default=text("0"))
    automation_id: Mapped[str | None] = mapped_column(String(32), default=None)
    step_id: Mapped[str | None] = mapped_column(String(64), default=None)
    broadcast_id: Mapped[str | None] = mapped_column(String(32), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    last_reply: Mapped[str | None] = mapped_column(Text, default=None)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    smtp_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    due_at: Mapped[datetime | None] = mapped_column(default=now)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    erased_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Whether opens and clicks are tracked (the pixel and rewritten links, ``domain/
    #: tracking``): the call's or the automation step's choice, default on.
    tracking: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    #: The subscription group a marketing message belongs to (one of the project's
    #: :class:`SubscriptionGroup` names), or None: only a whole unsubscribe stops it.
    subscription_group: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key", name="uq_messages_idempotency"),
        # Workers claim by due time among pending messages only.
        Index(
            "ix_messages_due",
            "priority",
            "due_at",
            sqlite_where=PENDING_SQL,
            postgresql_where=PENDING_SQL,
        ),
        # The list API: a project's messages newest first, and its filters.
        Index("ix_messages_project", "project_id", "created_at", "id"),
        Index("ix_messages_to", "project_id", "to_email"),
        Index("ix_messages_profile", "profile_id"),
        Index("ix_messages_automation", "automation_id"),
        Index("ix_messages_broadcast", "broadcast_id"),
        # Feedback joins a provider's event back to its message by these.
        Index("ix_messages_provider_message", "provider_message_id"),
        Index("ix_messages_smtp_message", "smtp_message_id"),
    )


class MessageHistory(Base):
    """One step of a message's life: a status it took, when, and why (``detail``)."""

    __tablename__ = "message_history"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=now)
    detail: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (Index("ix_message_history_message", "message_id", "id"),)


class MessageEventType(StrEnum):
    """What happened to a message after it left (engine spec sections 6 and 7): the relay's or
    the recipient's mailbox's feedback, and the recipient's engagement."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"


class MessageEvent(Base):
    """One feedback or engagement event of a project's mail, in the common taxonomy
    (:class:`MessageEventType`), whatever reported it.

    ``source`` says who: a relay's webhook slug (``postmark``, ``ses``, ..., ``smtp`` for the
    generic schema), ``bounce_mailbox`` (a DSN or ARF report mailed to GetFluxly) or
    ``tracking`` (the open pixel, a click, an unsubscribe). ``provider_event_id`` is the
    reporter's id for the event, unique per project and source, so a replayed report is
    recorded once. ``message_id`` is the ledger message it was joined to (None when it could not
    be: the event is kept for the address all the same). ``machine`` flags an open or click made
    by a machine (a privacy proxy prefetching images, a link scanner), which segments and
    stats leave out. Segments (``{"email": ...}`` rules), automations and the dashboard's charts
    read this table; rows are never updated.
    """

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    message_id: Mapped[str | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), default=None
    )
    profile_id: Mapped[str | None] = mapped_column(String(32), default=None)
    email: Mapped[str] = mapped_column(String(ADDRESS_MAX))
    type: Mapped[str] = mapped_column(String(16))
    #: ``hard`` or ``soft`` for a bounce, else None.
    bounce_type: Mapped[str | None] = mapped_column(String(8), default=None)
    machine: Mapped[bool] = mapped_column(default=False)
    #: A click's link (as it was in the message).
    url: Mapped[str | None] = mapped_column(Text, default=None)
    #: The reporter's words: a bounce's diagnostic, a complaint's feedback type, ...
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    source: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str | None] = mapped_column(String(255), default=None)
    occurred_at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint(
            "project_id", "source", "provider_event_id", name="uq_message_events_reported"
        ),
        Index("ix_message_events_message", "message_id", "id"),
        Index("ix_message_events_project", "project_id", "occurred_at"),
        Index("ix_message_events_profile", "profile_id", "type", "occurred_at"),
    )


class Subscription(Base):
    """A recipient's choice for one subscription group of a project (the preference page of
    engine spec section 6). An address with no row for a group is subscribed to it; leaving
    every marketing message is a suppression with reason ``unsubscribed``, not a row here.
    ``email`` is stored lower-cased (as suppressions are)."""

    __tablename__ = "subscriptions"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(ADDRESS_MAX), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscribed: Mapped[bool] = mapped_column()
    #: The message whose link the choice was made from, if any.
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=now)


class Segment(Base):
    """A saved segment of a project: a rule (engine spec section 3) whose members are kept
    current in :class:`SegmentMember`. Deleted segments are kept (``deleted_at``) for the
    broadcasts and automations that named them; their names are free again."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    rule: Mapped[dict[str, Any]] = mapped_column()
    #: Grows with every edit of the rule; membership computed for an older version is redone.
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index(
            "ux_segments_name",
            "project_id",
            "name",
            unique=True,
            sqlite_where=LIVE_SQL,
            postgresql_where=LIVE_SQL,
        ),
    )


class SegmentMember(Base):
    """A profile that is in a segment now, since ``entered_at``. Written only by the segment
    evaluator, which records every entry and exit in :class:`SegmentTransition` in the same
    transaction."""

    __tablename__ = "segment_members"

    segment_id: Mapped[str] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[str] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    entered_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (Index("ix_segment_members_profile", "profile_id"),)


class SegmentTransition(Base):
    """One entry into or exit from a segment (``kind``: ``entered`` | ``left``), in the order
    they happened (``id``). Automations with a ``segment_entered``/``segment_left`` trigger
    start from these; rows are never updated."""

    __tablename__ = "segment_transitions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    segment_id: Mapped[str] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    profile_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        Index("ix_segment_transitions_segment", "segment_id", "id"),
        Index("ix_segment_transitions_project", "project_id", "id"),
    )


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    SOFT_BOUNCE_LIMIT = "soft_bounce_limit"
    UNSUBSCRIBED = "unsubscribed"
    MANUAL = "manual"


class Suppression(Base):
    """An address of a project that no message may be sent to (engine spec section 6).
    ``email`` is stored lower-cased, so the check is one primary-key lookup."""

    __tablename__ = "suppressions"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(ADDRESS_MAX), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    #: Where it came from: a message id (a bounce, a complaint, an unsubscribe) or None.
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)


class ProviderLimitState(Base):
    """One provider's shared rate state (``domain/provider_limits.py``), one row per provider
    that has sent under a rate limit. Its row lock is what serialises the provider's takes
    and connection acquisitions across worker processes. Times are the limiter's clock:
    seconds since the epoch."""

    __tablename__ = "provider_limit_state"

    provider_id: Mapped[str] = mapped_column(
        ForeignKey("email_providers.id", ondelete="CASCADE"), primary_key=True
    )
    #: Tokens left in the per-second bucket as of ``refilled_at``.
    tokens: Mapped[float] = mapped_column(Double)
    refilled_at: Mapped[float] = mapped_column(Double)
    #: Messages granted per minute over the last hour: ``[[minute, count], ...]``, oldest first
    #: (minute = epoch seconds // 60).
    hour: Mapped[list[list[int]]] = mapped_column(JSON)


class ProviderConnection(Base):
    """A connection slot to a provider held by a worker (``holder``) until ``lease_until``
    (the limiter's clock); a slot whose lease ran out no longer counts."""

    __tablename__ = "provider_connections"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("email_providers.id", ondelete="CASCADE"))
    holder: Mapped[str] = mapped_column(String(200))
    lease_until: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ix_provider_connections_provider", "provider_id", "lease_until"),)


class OutboundWebhook(Base):
    """A customer's endpoint that receives a project's message events (engine spec section
    7, outbound): ``events`` are the subscribed types (``message.bounced``, ...). ``secret``
    is the Standard Webhooks signing secret (``whsec_...``), AES-GCM encrypted with the
    keyring (bound to the row's id); shown once, when the endpoint is created."""

    __tablename__ = "outbound_webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (Index("ix_outbound_webhooks_project", "project_id", "created_at"),)


class OutboundDelivery(Base):
    """One event to send to one endpoint: the Standard Webhooks message (``id`` is its
    ``webhook-id``, the same on every attempt). The body is built from the event row when
    it is sent, so nothing personal is copied here (an erasure that scrubs the event scrubs
    what is sent). ``status``: ``pending`` | ``succeeded`` | ``failed`` (attempts used up)."""

    __tablename__ = "outbound_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("outbound_webhooks.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    message_event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("message_events.id", ondelete="CASCADE"),
    )
    event_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        Index("ix_outbound_deliveries_webhook", "webhook_id", "created_at", "id"),
        Index("ix_outbound_deliveries_event", "message_event_id"),
    )


class OutboundAttempt(Base):
    """One HTTP attempt of a delivery, for the delivery log: the status code (None when no
    answer came), our own error text (never the secret), and a short printable excerpt of
    the answer's body."""

    __tablename__ = "outbound_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("outbound_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column()
    status_code: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[int] = mapped_column(default=0)
    at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (Index("ix_outbound_attempts_delivery", "delivery_id", "id"),)


class WebhookSecret(Base):
    """What verifies a relay's webhook posts for a project (engine spec section 7).

    ``secret`` holds the verification material as a JSON object (a secret GetFluxly made, or
    what the relay made: SendGrid's public key, Mailgun's signing key, a Svix ``whsec_``),
    AES-GCM encrypted with the keyring and bound to the row's id; it is shown once, never
    returned again. ``config`` holds what is not secret (SNS topic ARNs allowed).
    ``expires_at`` is None for the relay's current secret; rotating sets it on the old ones
    (24 hours on), and a secret past it verifies nothing.
    """

    __tablename__ = "webhook_secrets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    relay: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=now)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_webhook_secrets_project", "project_id", "relay"),)


#: An inbox row not processed yet (partial-index predicate, literal SQL as above).
INBOX_PENDING_SQL = text("processed_at IS NULL")


class WebhookInbox(Base):
    """A relay's webhook post as accepted: verified, stored once per delivery, processed in
    the background (``domain/feedback/inbox.py``).

    ``delivery_id`` is the relay's id for the post (an SNS MessageId, a Svix or Standard
    Webhooks id, a Mailgun token) or, for relays that send none, the SHA-256 of the body; a
    post whose ``(project, relay, delivery_id)`` is stored is a replay and changes nothing.
    ``payload`` is the body as received (UTF-8). Once processed, ``events`` says how many
    feedback events it held and ``error`` why it held none it could read.
    """

    __tablename__ = "webhook_inbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    relay: Mapped[str] = mapped_column(String(16))
    delivery_id: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255), default="")
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=now)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    events: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        UniqueConstraint("project_id", "relay", "delivery_id", name="uq_webhook_inbox_delivery"),
        Index(
            "ix_webhook_inbox_pending",
            "project_id",
            "id",
            sqlite_where=INBOX_PENDING_SQL,
            postgresql_where=INBOX_PENDING_SQL,
        ),
        Index("ix_webhook_inbox_received", "received_at"),
    )


# Feedback counts an address's recent reports (soft bounces) and segments read an address's
# events: by project, address and time (declared here, after the table, as migration 0011
# adds it).
Index(
    "ix_message_events_email",
    MessageEvent.project_id,
    MessageEvent.email,
    MessageEvent.occurred_at,
)


class SubscriptionGroup(Base):
    """A subscription group of a project (``newsletter``, ``product-updates``, ...): what the
    preference page lists, and what a marketing message may name as its
    ``subscription_group``. Set as a whole list with ``PUT /v1/projects/{project_id}/
    subscription-groups``; ``position`` is the order the page shows them in."""

    __tablename__ = "subscription_groups"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(NAME_MAX))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    position: Mapped[int] = mapped_column(default=0)


class BroadcastStatus(StrEnum):
    """Where a broadcast is (engine spec section 5)."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"  # started with a send_at in the future: starts then
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"  # every member has a final message
    CANCELLED = "cancelled"


#: Broadcasts a runner acts on (partial-index predicate, literal SQL as above).
ACTIVE_BROADCAST_SQL = text("status IN ('scheduled', 'sending')")


class Broadcast(Base):
    """A template sent to a segment's members, snapshotted when it starts
    (:class:`BroadcastRecipient`) and recorded in the ledger a slice at a time by the
    broadcast runner (``domain/broadcasts``), as its rate allows.

    ``next_position``: recipients before it have been handled (their message recorded, or
    ``skipped`` when the member had no usable address); the runner moves it in the
    transaction that records their messages, so a crash never skips or repeats anyone.
    ``rate_tokens``/``rate_at``: the token bucket of ``rate_per_minute``. ``withdrawn``:
    messages turned ``failed`` by a cancel before they were attempted.
    """

    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    template_id: Mapped[str] = mapped_column(String(32))
    segment_id: Mapped[str] = mapped_column(String(32))
    provider_id: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(16), default=BroadcastStatus.DRAFT.value)
    send_at: Mapped[datetime | None] = mapped_column(default=None)
    rate_per_minute: Mapped[int | None] = mapped_column(default=None)
    targeted: Mapped[int] = mapped_column(default=0)
    next_position: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    withdrawn: Mapped[int] = mapped_column(default=0)
    rate_tokens: Mapped[float | None] = mapped_column(Double, default=None)
    rate_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Why the runner paused it by itself (the template was deleted, ...), else None.
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        Index("ix_broadcasts_project", "project_id", "created_at", "id"),
        # The runner's poll: the few broadcasts scheduled or sending, without reading the rest.
        Index(
            "ix_broadcasts_active",
            "status",
            sqlite_where=ACTIVE_BROADCAST_SQL,
            postgresql_where=ACTIVE_BROADCAST_SQL,
        ),
    )


class BroadcastRecipient(Base):
    """One member of a broadcast's audience, as the segment was when the broadcast started,
    numbered from 0 (``position``: the order the runner records their messages in). Only the
    profile's id: the address is read from the profile when its message is recorded."""

    __tablename__ = "broadcast_recipients"

    broadcast_id: Mapped[str] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(32))


class Automation(Base):
    """A project's automation (engine spec section 4): its current definition (``trigger``,
    ``steps``, ``reentry``, ``exit_on``, ``quiet_hours``, ``frequency_cap`` as JSON, checked by
    ``domain.automations.definition``) and ``status`` (``draft`` | ``active`` | ``paused``).
    ``version`` grows with each edit of the definition; every version that runs is kept in
    :class:`AutomationVersion`, so runs stay on the version they entered. Deleted automations
    keep their row (``deleted_at``) for the messages and runs that name them."""

    __tablename__ = "automations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    version: Mapped[int] = mapped_column(default=1)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)
    #: When it was last activated (the engine's clock): date triggers never fire for dates
    #: before it.
    activated_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_automations_project", "project_id", "created_at", "id"),)


class AutomationVersion(Base):
    """One version of an automation's definition, kept while runs may be on it."""

    __tablename__ = "automation_versions"

    automation_id: Mapped[str] = mapped_column(
        ForeignKey("automations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=now)


#: A run still under way (partial-index predicate, literal SQL as above).
RUN_ACTIVE_SQL = text("status = 'running'")


class AutomationRun(Base):
    """One profile's journey through one version of an automation, and its pending wake-up.

    ``step_id`` is where the run is (None once finished); ``waiting`` says that step has
    begun and the run waits on it (a delay's end, an awaited event ``wait_event`` or its
    timeout, a send postponed past quiet hours). ``wake_at`` is when the runner takes the
    run next (for a run waiting for an event: the timeout). A run is advanced only inside a
    transaction that holds its row, and what a step does (a message recorded, a job queued,
    traits changed) commits with the run's new position, so a crash replays from the last
    committed position and never skips or repeats a step's effect. ``context`` is what the
    run was started by (the triggering event's name and properties, for templates).
    At most one run of an automation is under way per profile (``ux_automation_runs_running``).
    """

    __tablename__ = "automation_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    automation_id: Mapped[str] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    profile_id: Mapped[str] = mapped_column(String(32))
    #: running | completed | exited
    status: Mapped[str] = mapped_column(String(16), default="running")
    step_id: Mapped[str | None] = mapped_column(String(64), default=None)
    waiting: Mapped[bool] = mapped_column(default=False)
    wait_event: Mapped[str | None] = mapped_column(String(64), default=None)
    wake_at: Mapped[datetime | None] = mapped_column(default=None)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: What started it, for triggers that must not start twice for one cause (a date trait's
    #: value).
    trigger_key: Mapped[str | None] = mapped_column(String(255), default=None)
    #: Why it ended: completed | exit_step | exit_on | merged | paused | erased | failed
    exit_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    failures: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    entered_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index(
            "ix_automation_runs_due",
            "wake_at",
            sqlite_where=RUN_ACTIVE_SQL,
            postgresql_where=RUN_ACTIVE_SQL,
        ),
        Index(
            "ux_automation_runs_running",
            "automation_id",
            "profile_id",
            unique=True,
            sqlite_where=RUN_ACTIVE_SQL,
            postgresql_where=RUN_ACTIVE_SQL,
        ),
        Index("ix_automation_runs_profile", "profile_id", "automation_id", "entered_at"),
    )


class AutomationStepLog(Base):
    """What happened at a step of a run (``outcome``: entered, completed, sent, skipped,
    capped, postponed, timed_out, event, exited, failed), at the engine's time: the per-step
    stats of the API, and the sends a frequency cap counts."""

    __tablename__ = "automation_step_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    automation_id: Mapped[str] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(32))
    profile_id: Mapped[str] = mapped_column(String(32))
    step_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)
    at: Mapped[datetime] = mapped_column(default=now)

    __table_args__ = (
        Index("ix_automation_step_log_stats", "automation_id", "step_id", "outcome"),
        Index("ix_automation_step_log_profile", "project_id", "profile_id", "outcome", "at"),
    )


class AutomationCursor(Base):
    """How far a project's automations have read a stream: ``segments`` (the last
    ``segment_transitions.id`` taken) or ``dates`` (when date triggers were last checked)."""

    __tablename__ = "automation_cursors"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    checked_at: Mapped[datetime | None] = mapped_column(default=None)


class User(Base):
    """A person who signs in to the dashboard: one workspace, one role (``admin``,
    ``editor`` or ``viewer``). ``email`` is stored lower-cased and is unique across the
    install, so signing in needs no workspace. ``password_hash`` is argon2id (PHC string)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(ADDRESS_MAX), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=now)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_users_workspace", "workspace_id"),)


class UserSession(Base):
    """A signed-in browser: the SHA-256 of its cookie's random token (the token itself is
    never stored), the CSRF token its forms carry, and when it ends."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=now)
    last_seen_at: Mapped[datetime] = mapped_column(default=now)
    expires_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index("ix_user_sessions_user", "user_id"),)


class SignInFailure(Base):
    """Failed sign-ins counted per bucket (``address:...`` or ``account:...``) within a
    window that starts at the first failure: the dashboard's sign-in throttle, shared by
    every API process through the database."""

    __tablename__ = "sign_in_failures"

    bucket: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[datetime] = mapped_column()


class SegmentPending(Base):
    """A profile to evaluate again against its project's segments that read messages
    ``sent``: written when one of its messages is sent, due at once (``due_at`` None) and
    when that message leaves each window (``within``) those segments have. Drained by
    ``domain.segments.sent``."""

    __tablename__ = "segment_pending"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    profile_id: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_segment_pending_due", "project_id", "due_at", "id"),)


class SegmentPass(Base):
    """When the segments' periodic pass last went over a project: the engine's time
    (``engine_at``: windows crossed since) and the system's when it began (``started_at``:
    profiles changed since), so a worker that starts carries on from there."""

    __tablename__ = "segment_passes"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    engine_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime] = mapped_column()
