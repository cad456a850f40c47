"""Per-provider sending limits held across every worker process (engine spec section 2):
``rate_per_second``, ``rate_per_hour`` and ``max_connections``, kept in the database every
worker shares (one SQLite file or one PostgreSQL database), so four workers on a provider
limited to 50 a second send 50 a second between them, not 200.

Rates:

- ``rate_per_second`` is a token bucket: it holds at most one second's worth of messages
  (:data:`BURST_SECONDS`; at least one message) and refills continuously at the rate. Over
  any stretch of T seconds a provider is granted at most ``burst + rate * T``.
- ``rate_per_hour`` is a sliding window of one-minute slots: what was granted in the minute
  slots that overlap the last hour counts, so no rolling hour ever holds more than the limit
  (a refilling bucket would let up to twice through across a window boundary). Counting
  whole minutes errs on the safe side: a slot leaves the window up to a minute late.
- A take grants at most what both allow, never more than asked. ``retry_after`` is the wait
  until at least one more message may go (0.0: now). When the hour is used up it can be
  most of an hour: put the provider's messages off (defer them) rather than sleep.

Each provider's state is one row, locked for the length of a short transaction (PostgreSQL
``SELECT ... FOR UPDATE``; SQLite's write lock), so takes from every process apply one after
the other; a provider with no rate limit never touches the database. Each call is its own
transaction: never call the limiter while holding another one open (on SQLite that one holds
the write lock the limiter's would wait for). The clock (seconds since the epoch,
``time.time`` by default) is read once per call, after the lock is taken; tests inject
their own. Processes whose clocks disagree a little (several machines on one
PostgreSQL) cannot make the bucket run backwards: the stored time only moves forward.

Connections: ``max_connections`` counts slots held under a lease. A worker acquires a slot
before it opens a connection to the provider (a pool of n connections: ``acquire_connections``
for up to n), renews it while it keeps the connection, and releases it when it closes; a
worker that dies (SIGKILL) holds its slots only until their leases run out. Lowering the
limit leaves slots already held to run out or be released; no new one is granted meanwhile.

How a delivery loop uses it (one :class:`ProviderLimiter` per worker process)::

    limiter = ProviderLimiter(db)
    limits = ProviderLimits.of(provider_row)          # re-read when the provider may change
    slot = limiter.acquire_connection(limits, holder=worker_id, lease_seconds=60)
    if slot is None:
        ...  # every allowed connection is held elsewhere: try this provider again shortly
    try:
        while there are messages for the provider:
            granted, retry_after = limiter.take(limits, 100)    # a batch: one transaction
            send up to ``granted`` messages; if fewer were sent, limiter.refund(limits, unused)
            if granted < 100: sleep retry_after (or serve another provider meanwhile)
            every lease_seconds / 3: slot = limiter.renew(slot, 60) (None: the lease ran out,
                                     close the connection and acquire again)
    finally:
        limiter.release(slot)

A provider without a connection limit gets a slot that is recorded nowhere (``slot.id`` is
None), so the loop need not treat it differently.

A delivery loop written against a send-gate port (``take(limits, want) -> (granted, wait)``,
``acquire(limits, timeout) -> bool``, ``release(limits)``) gets one as
``SharedSendGate(ProviderLimiter(db), holder=worker_id)``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import NotFound
from getfluxly_server.storage import provider_limits as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.provider_limits import StoredState

#: The per-second bucket holds this many seconds' worth of messages (at least one message):
#: after a pause a provider may send that many at once, then at its rate.
BURST_SECONDS = 1.0
#: The hour window's slot length, and how many slots make the hour.
SLOT_SECONDS = 60
HOUR_SLOTS = 60
#: How long a connection slot is held unless renewed, by default (seconds).
DEFAULT_LEASE = 60.0
#: The longest holder name (a worker's id) a slot records.
HOLDER_MAX = 200
#: Tokens are floats; this much short of a whole token still counts as one.
_EPSILON = 1e-9

#: Seconds since the epoch (``time.time``), or a test's own clock.
Clock = Callable[[], float]


class _Limits(Protocol):
    @property
    def max_connections(self) -> int | None: ...
    @property
    def rate_per_second(self) -> float | None: ...
    @property
    def rate_per_hour(self) -> int | None: ...


class _HasLimits(_Limits, Protocol):
    """A provider row (``storage.models.EmailProvider``): its ``id`` and the three limits."""

    @property
    def id(self) -> str: ...


class _LimitsLike(_Limits, Protocol):
    """Limits as another module's own value holds them (``provider_id`` and the three)."""

    @property
    def provider_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """One provider's limits (None: no limit of that kind)."""

    provider_id: str
    max_connections: int | None = None
    rate_per_second: float | None = None
    rate_per_hour: int | None = None

    @classmethod
    def of(cls, provider: _HasLimits) -> ProviderLimits:
        """The limits of a provider row (``storage.models.EmailProvider``) or anything with
        its ``id`` and limit attributes."""
        return cls(
            provider.id, provider.max_connections, provider.rate_per_second,
            provider.rate_per_hour,
        )  # fmt: skip

    @property
    def rated(self) -> bool:
        """Whether any rate limit applies (else takes never touch the database)."""
        return bool(self.rate_per_second) or bool(self.rate_per_hour)

    @property
    def burst(self) -> float:
        """The per-second bucket's size: :data:`BURST_SECONDS` of the rate, at least 1."""
        return max(1.0, (self.rate_per_second or 0.0) * BURST_SECONDS)


class Grant(NamedTuple):
    """What a take allows: send ``granted`` messages now; ``retry_after`` seconds from now at
    least one more may go (0.0: at once). Unpacks as ``granted, retry_after = ...``."""

    granted: int
    retry_after: float


@dataclass(frozen=True, slots=True)
class Slot:
    """A connection slot held by ``holder`` until ``lease_until`` (the limiter's clock).
    ``id`` is None when the provider has no connection limit (nothing is recorded; renewing
    and releasing it do nothing)."""

    provider_id: str
    holder: str
    id: int | None
    lease_until: float


# The rules, without a database: state in, state and grant out.


def initial_state(limits: ProviderLimits) -> StoredState:
    """A provider's state before its first take: a full bucket, an empty hour. (Its time is
    the epoch: the first take moves it to now.)"""
    return StoredState(limits.burst, 0.0, ())


def refill(state: StoredState, limits: ProviderLimits, now: float) -> StoredState:
    """``state`` as of ``now``: the bucket refilled for the time elapsed (up to its size), the
    minute slots that have left the hour dropped. A ``now`` behind the stored time (another
    process's clock ran ahead) counts as the stored time."""
    moment = max(now, state.refilled_at)
    tokens = state.tokens
    if limits.rate_per_second:
        elapsed = moment - state.refilled_at
        tokens = min(limits.burst, tokens + elapsed * limits.rate_per_second)
    oldest = _minute(moment) - HOUR_SLOTS
    hour = tuple(slot for slot in state.hour if slot[0] >= oldest)
    return StoredState(tokens, moment, hour)


def take_from(
    state: StoredState, limits: ProviderLimits, want: int, now: float
) -> tuple[StoredState, Grant]:
    """Grant up to ``want`` messages at ``now`` from ``state``: the new state and the grant."""
    state = refill(state, limits, now)
    granted = want
    if limits.rate_per_second:
        granted = min(granted, math.floor(state.tokens + _EPSILON))
    if limits.rate_per_hour:
        granted = min(granted, limits.rate_per_hour - _used(state))
    granted = max(0, granted)
    tokens = state.tokens - granted if limits.rate_per_second else state.tokens
    after = replace(
        state, tokens=tokens, hour=_count(state.hour, _minute(state.refilled_at), granted)
    )
    return after, Grant(granted, wait(after, limits))


def give_back(state: StoredState, limits: ProviderLimits, count: int) -> StoredState:
    """``count`` granted messages that were not sent, returned: the bucket refilled by that
    many (up to its size) and the newest minute slots lowered."""
    tokens = min(limits.burst, state.tokens + count) if limits.rate_per_second else state.tokens
    hour = list(state.hour)
    left = count
    for index in range(len(hour) - 1, -1, -1):
        minute, taken = hour[index]
        back = min(taken, left)
        hour[index] = (minute, taken - back)
        left -= back
    return replace(state, tokens=tokens, hour=tuple(slot for slot in hour if slot[1] > 0))


def wait(state: StoredState, limits: ProviderLimits) -> float:
    """Seconds from the state's time until at least one more message may go."""
    seconds = 0.0
    if limits.rate_per_second and state.tokens + _EPSILON < 1:
        seconds = (1 - state.tokens) / limits.rate_per_second
    if limits.rate_per_hour:
        over = _used(state) - limits.rate_per_hour + 1  # grants that must leave the window
        for minute, count in state.hour:
            if over <= 0:
                break
            over -= count
            if over <= 0:
                leaves = (minute + HOUR_SLOTS + 1) * SLOT_SECONDS
                seconds = max(seconds, leaves - state.refilled_at)
    return max(0.0, seconds)


def _minute(moment: float) -> int:
    return math.floor(moment / SLOT_SECONDS)


def _used(state: StoredState) -> int:
    return sum(count for _, count in state.hour)


def _count(
    hour: tuple[tuple[int, int], ...], minute: int, granted: int
) -> tuple[tuple[int, int], ...]:
    if granted <= 0:
        return hour
    if hour and hour[-1][0] == minute:
        return (*hour[:-1], (minute, hour[-1][1] + granted))
    return (*hour, (minute, granted))


# The shared limiter: the rules above applied to each provider's row.


class ProviderLimiter:
    """Takes from each provider's shared limits in ``db``. Thread-safe (it holds nothing but
    the database and the clock); make one per worker process."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock

    def take(self, provider: ProviderLimits | _HasLimits, want: int) -> Grant:
        """Take up to ``want`` messages' worth of the provider's rates (one transaction; none
        when it has no rate limit: everything is granted). not_found when the provider has
        been deleted."""
        limits = _limits(provider)
        if want < 0:
            raise ValueError("want must be >= 0")
        if want == 0 or not limits.rated:
            return Grant(want, 0.0)
        with self._transaction() as session:
            state = self._locked(session, limits)
            after, grant = take_from(state, limits, want, self.clock())
            store.save_state(session, limits.provider_id, after)
            return grant

    def refund(self, provider: ProviderLimits | _HasLimits, count: int) -> None:
        """Give back ``count`` granted messages that will not be sent (fewer were due than
        granted), so the provider's rate is not spent on nothing."""
        limits = _limits(provider)
        if count <= 0 or not limits.rated:
            return
        with self._transaction() as session:
            state = refill(self._locked(session, limits), limits, self.clock())
            store.save_state(session, limits.provider_id, give_back(state, limits, count))

    def acquire_connection(
        self,
        provider: ProviderLimits | _HasLimits,
        holder: str,
        lease_seconds: float = DEFAULT_LEASE,
    ) -> Slot | None:
        """A connection slot for ``holder`` (a worker's id) until ``lease_seconds`` from now,
        or None while ``max_connections`` slots are held (by live leases) across all
        processes. Without a connection limit: an unrecorded slot at once."""
        slots = self.acquire_connections(provider, holder, 1, lease_seconds)
        return slots[0] if slots else None

    def acquire_connections(
        self,
        provider: ProviderLimits | _HasLimits,
        holder: str,
        want: int,
        lease_seconds: float = DEFAULT_LEASE,
    ) -> list[Slot]:
        """Up to ``want`` slots at once (a worker's connection pool: one slot per connection),
        as many as ``max_connections`` leaves free; possibly none. One transaction."""
        limits = _limits(provider)
        if len(holder) > HOLDER_MAX:
            raise ValueError(f"holder must be at most {HOLDER_MAX} characters")
        if limits.max_connections is None:
            return [Slot(limits.provider_id, holder, None, math.inf) for _ in range(want)]
        if want <= 0:
            return []
        with self._transaction() as session:
            self._locked(session, limits)  # acquisitions of one provider, one at a time
            now = self.clock()
            store.drop_expired(session, limits.provider_id, now)
            live = store.live_connections(session, limits.provider_id, now)
            lease_until = now + lease_seconds
            return [
                Slot(limits.provider_id, holder, slot_id, lease_until)
                for slot_id in store.add_connections(
                    session, limits.provider_id, holder, lease_until,
                    min(want, limits.max_connections - live),
                )
            ]  # fmt: skip

    def renew(self, slot: Slot, lease_seconds: float = DEFAULT_LEASE) -> Slot | None:
        """The slot held for ``lease_seconds`` more; None when its lease had already run out
        (its place may be another worker's now: close the connection, acquire again)."""
        if slot.id is None:
            return slot
        with self._transaction() as session:
            now = self.clock()
            lease_until = now + lease_seconds
            if not store.renew_connection(session, slot.id, slot.holder, now, lease_until):
                return None
        return replace(slot, lease_until=lease_until)

    def release(self, slot: Slot) -> None:
        """Give the slot back (nothing if it is unrecorded, or its lease ran out and it is
        gone already)."""
        if slot.id is None:
            return
        with self._transaction() as session:
            store.delete_connection(session, slot.id, slot.holder)

    def release_all(self, holder: str) -> int:
        """Give back every slot ``holder`` holds (a worker shutting down); how many."""
        with self._transaction() as session:
            return store.delete_connections_of(session, holder)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self.db.transaction() as session:
            store.relax_durability(session)
            yield session

    def _locked(self, session: Session, limits: ProviderLimits) -> StoredState:
        state = store.lock_state(session, limits.provider_id, initial_state(limits))
        if state is None:
            raise NotFound("email provider")
        return state


def _limits(provider: ProviderLimits | _HasLimits) -> ProviderLimits:
    return provider if isinstance(provider, ProviderLimits) else ProviderLimits.of(provider)


def _as_limits(limits: _LimitsLike) -> ProviderLimits:
    if isinstance(limits, ProviderLimits):
        return limits
    return ProviderLimits(
        limits.provider_id, limits.max_connections, limits.rate_per_second,
        limits.rate_per_hour,
    )  # fmt: skip


class SharedSendGate:
    """The limiter behind a delivery loop's send-gate port: ``take(limits, want) -> (granted,
    wait)``, ``acquire(limits, timeout) -> bool`` (one connection slot, waiting up to
    ``timeout`` seconds), ``release(limits)``. ``limits`` is any value with ``provider_id``,
    ``max_connections``, ``rate_per_second`` and ``rate_per_hour``.

    Slots are held under ``holder`` (this worker process's id) with a lease of
    ``lease_seconds``: make it longer than a chunk of messages can take to send, or call
    :meth:`renew_held` while sending (a worker that dies gives its slots back when their
    leases run out). Thread-safe: the threads of one worker share one gate.
    """

    #: How often a waiting :meth:`acquire` asks again (seconds).
    POLL = 0.02

    def __init__(self, limiter: ProviderLimiter, holder: str, lease_seconds: float = 300.0) -> None:
        self.limiter, self.holder, self.lease_seconds = limiter, holder, lease_seconds
        self._lock = threading.Lock()
        self._held: dict[str, list[Slot]] = {}
        #: Whether this gate ever recorded a slot (only then has :meth:`close` rows to delete).
        self._recorded = False

    def take(self, limits: _LimitsLike, want: int) -> tuple[int, float]:
        granted, retry_after = self.limiter.take(_as_limits(limits), want)
        return granted, retry_after

    def acquire(self, limits: _LimitsLike, timeout: float) -> bool:
        wanted = _as_limits(limits)
        deadline = time.monotonic() + timeout
        while True:
            slot = self.limiter.acquire_connection(wanted, self.holder, self.lease_seconds)
            if slot is not None:
                with self._lock:
                    self._held.setdefault(wanted.provider_id, []).append(slot)
                    self._recorded = self._recorded or wanted.max_connections is not None
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.POLL, left))

    def release(self, limits: _LimitsLike) -> None:
        with self._lock:
            held = self._held.get(limits.provider_id)
            slot = held.pop() if held else None
            if held == []:
                del self._held[limits.provider_id]
        if slot is not None:
            self.limiter.release(slot)

    def renew_held(self) -> int:
        """Renew every slot this gate holds; how many had already lapsed (those are dropped:
        their connections should close)."""
        with self._lock:
            held = {provider: list(slots) for provider, slots in self._held.items()}
        lapsed = 0
        for provider, slots in held.items():
            for slot in slots:
                renewed = self.limiter.renew(slot, self.lease_seconds)
                with self._lock:
                    mine = self._held.get(provider, [])
                    if slot not in mine:  # released meanwhile
                        continue
                    if renewed is None:
                        mine.remove(slot)
                        lapsed += 1
                    else:
                        mine[mine.index(slot)] = renewed
        return lapsed

    def renew(self) -> None:
        """:meth:`renew_held`, as a delivery loop's send gate calls it."""
        self.renew_held()

    def close(self) -> None:
        """Give back every slot this holder holds (a worker stopping)."""
        with self._lock:
            self._held.clear()
            recorded, self._recorded = self._recorded, False
        if recorded:  # a loop that never met a connection limit leaves no rows
            self.limiter.release_all(self.holder)
