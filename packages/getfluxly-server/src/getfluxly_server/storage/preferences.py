"""Subscription groups of a project and recipients' choices per group (``subscriptions``):
what the preference page shows and writes, and what the delivery check reads."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Subscription, SubscriptionGroup, now
from getfluxly_server.storage.suppressions import normalise


def groups(session: Session, project_id: str) -> Sequence[SubscriptionGroup]:
    """The project's groups in the order the page shows them."""
    query = (
        select(SubscriptionGroup)
        .where(SubscriptionGroup.project_id == project_id)
        .order_by(SubscriptionGroup.position, SubscriptionGroup.name)
    )
    return session.scalars(query).all()


def group_exists(session: Session, project_id: str, name: str) -> bool:
    return session.get(SubscriptionGroup, (project_id, name)) is not None


def replace_groups(
    session: Session, project_id: str, rows: Sequence[tuple[str, str, str | None]]
) -> None:
    """Make the project's groups exactly ``rows`` (name, label, description), in order.
    Choices already made for a group that goes are kept (the group may come back)."""
    session.execute(delete(SubscriptionGroup).where(SubscriptionGroup.project_id == project_id))
    session.add_all(
        SubscriptionGroup(
            project_id=project_id, name=name, label=label, description=description, position=i
        )
        for i, (name, label, description) in enumerate(rows)
    )
    session.flush()


def choices(session: Session, project_id: str, email: str) -> dict[str, bool]:
    """The address's choices by group name (a group with no choice is subscribed)."""
    query = select(Subscription.group_name, Subscription.subscribed).where(
        Subscription.project_id == project_id, Subscription.email == normalise(email)
    )
    return {name: bool(subscribed) for name, subscribed in session.execute(query)}


def set_choices(
    session: Session,
    project_id: str,
    email: str,
    wanted: dict[str, bool],
    message_id: str | None = None,
) -> None:
    """Record the address's choice for each group of ``wanted`` (one row per group, the
    latest choice replacing the one before; concurrent calls both succeed)."""
    if not wanted:
        return
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    moment = now()
    statement = insert_(Subscription).values(
        [
            {
                "project_id": project_id,
                "email": normalise(email),
                "group_name": name,
                "subscribed": subscribed,
                "message_id": message_id,
                "updated_at": moment,
            }
            for name, subscribed in wanted.items()
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=["project_id", "email", "group_name"],
        set_={
            "subscribed": statement.excluded.subscribed,
            "message_id": statement.excluded.message_id,
            "updated_at": statement.excluded.updated_at,
        },
    )
    session.execute(statement)


def unsubscribed(
    session: Session, project_id: str, pairs: Collection[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (address as given, group) of ``pairs`` chose to leave that group: one query."""
    if not pairs:
        return set()
    wanted = {(normalise(email), group) for email, group in pairs}
    query = select(Subscription.email, Subscription.group_name).where(
        Subscription.project_id == project_id,
        Subscription.subscribed.is_(False),
        tuple_(Subscription.email, Subscription.group_name).in_(wanted),
    )
    found = {(email, group) for email, group in session.execute(query)}
    return {(email, group) for email, group in pairs if (normalise(email), group) in found}
