"""Dashboard users, their sessions and the sign-in throttle's counters: all SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import SignInFailure, User, UserSession, UTCDateTime


def add_user(
    session: Session, user_id: str, workspace_id: str, email: str, role: str, password_hash: str
) -> User:
    row = User(
        id=user_id, workspace_id=workspace_id, email=email, role=role, password_hash=password_hash
    )
    session.add(row)
    session.flush()
    return row


def by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == email)).first()


def get(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def of_workspace(session: Session, workspace_id: str) -> Sequence[User]:
    query = select(User).where(User.workspace_id == workspace_id)
    return session.scalars(query.order_by(User.created_at, User.id)).all()


def add_session(
    session: Session, token_hash: str, user_id: str, csrf_token: str, at: datetime, until: datetime
) -> UserSession:
    row = UserSession(
        token_hash=token_hash, user_id=user_id, csrf_token=csrf_token, created_at=at,
        last_seen_at=at, expires_at=until,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def session_with_user(session: Session, token_hash: str) -> tuple[UserSession, User] | None:
    found = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == token_hash)
    ).first()
    return (found[0], found[1]) if found is not None else None


def touch_session(session: Session, token_hash: str, at: datetime, until: datetime) -> None:
    session.execute(
        update(UserSession)
        .where(UserSession.token_hash == token_hash)
        .values(last_seen_at=at, expires_at=until)
    )


def delete_session(session: Session, token_hash: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))


def delete_sessions_of(session: Session, user_id: str) -> int:
    result = session.execute(delete(UserSession).where(UserSession.user_id == user_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def delete_expired_sessions(session: Session, at: datetime) -> int:
    result = session.execute(delete(UserSession).where(UserSession.expires_at <= at))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def failures(session: Session, buckets: Sequence[str]) -> Sequence[SignInFailure]:
    return session.scalars(select(SignInFailure).where(SignInFailure.bucket.in_(buckets))).all()


def count_failure(
    session: Session, bucket: str, at: datetime, window_start_after: datetime
) -> None:
    """One more failure in ``bucket``; a window that started at or before
    ``window_start_after`` is over, so the count starts again at one from ``at``. One
    ``INSERT ... ON CONFLICT DO UPDATE``: two failures at once both count."""
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    over = SignInFailure.window_start <= window_start_after
    statement = (
        insert_(SignInFailure)
        .values(bucket=bucket, failures=1, window_start=at)
        .on_conflict_do_update(
            index_elements=["bucket"],
            set_={
                "failures": case((over, 1), else_=SignInFailure.failures + 1),
                "window_start": case(
                    (over, literal(at, UTCDateTime())), else_=SignInFailure.window_start
                ),
            },
        )
    )
    session.execute(statement)


def clear_failures(session: Session, bucket: str) -> None:
    session.execute(delete(SignInFailure).where(SignInFailure.bucket == bucket))
