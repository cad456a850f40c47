"""A project's mail over time: sends, deliveries, bounces, complaints, opens and clicks per
UTC day (the dashboard's charts). Sends are messages handed to a provider (the ledger's
``sent_at``); the rest are ``message_events`` of those types, machine opens and clicks left
out, whoever reported them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy.orm import Session

from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.storage import message_stats as store
from getfluxly_server.storage.models import MessageEventType, now

#: The series shown, in order: (name, label).
SERIES: tuple[tuple[str, str], ...] = (
    ("sent", "Sends"),
    (MessageEventType.DELIVERED.value, "Deliveries"),
    (MessageEventType.BOUNCED.value, "Bounces"),
    (MessageEventType.COMPLAINED.value, "Complaints"),
    (MessageEventType.OPENED.value, "Opens"),
    (MessageEventType.CLICKED.value, "Clicks"),
)
MAX_DAYS = 366


@dataclass(frozen=True)
class Activity:
    """``counts[name][i]`` is series ``name`` on ``days[i]`` (oldest first)."""

    days: list[date]
    counts: dict[str, list[int]]

    def total(self, name: str) -> int:
        return sum(self.counts[name])


def daily(
    session: Session, principal: Principal, project_id: str, days: int = 30,
    at: datetime | None = None, *, automation_id: str | None = None,
) -> Activity:  # fmt: skip
    """The last ``days`` UTC days (today included) of the project's mail (only the mail of
    ``automation_id`` when given: the caller has checked the automation is the project's)."""
    project_of(session, principal, project_id)
    days = max(1, min(days, MAX_DAYS))
    today = (at or now()).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=(at or now()).tzinfo)
    span = [first + timedelta(days=i) for i in range(days)]
    sends = store.sends_per_day(session, project_id, since, automation_id)
    events = store.events_per_day(session, project_id, since, automation_id)
    counts = {"sent": [sends.get(d, 0) for d in span]}
    for name, _ in SERIES[1:]:
        counts[name] = [events.get((name, d), 0) for d in span]
    return Activity(span, counts)
