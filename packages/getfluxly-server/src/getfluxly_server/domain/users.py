"""Dashboard users: accounts with a role in one workspace, argon2id passwords, server-side
sessions, and a sign-in throttle.

* A user belongs to one workspace and has one role: ``viewer`` (reads everything of the
  workspace), ``editor`` (also changes content: templates, suppressions, retries, test sends
  of templates) or ``admin`` (also the workspace's settings: providers, API keys, projects).
  :func:`allows` is the one rule every page and action of the dashboard asks.
* Emails are unique across the install (stored lower-cased), so signing in needs no
  workspace. Passwords: at least :data:`PASSWORD_MIN` characters, hashed with argon2id
  (argon2-cffi's defaults), rehashed on sign-in when those defaults grow.
* A session is a random token in an HttpOnly cookie; only its SHA-256 is stored, with the
  CSRF token the session's forms carry. It ends after :attr:`SessionRules.idle` without use,
  :attr:`SessionRules.absolute` after sign-in at the latest, or at sign-out.
* Throttle (:class:`SignInLimits`): failed sign-ins are counted per client address and per
  account (the email tried, known or not, so the answer never tells which emails exist),
  each within a window that starts at its first failure. A bucket at its limit refuses
  every attempt, right or wrong, with ``sign_in_throttled`` until its window is over. A
  success clears the account's bucket (not the address's: one address guessing many
  accounts stays limited).

:func:`sign_in` records failures in the caller's transaction and *returns* the refusal
rather than raising it, so the caller commits the count before it shows the refusal.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.messages.addresses import canonical_address
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import tenancy as tenancy_store
from getfluxly_server.storage import users as store
from getfluxly_server.storage.models import User, new_id, now

Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "editor", "viewer")
#: What a page or action needs: to see (every role), to change content, to administer.
Need = Literal["view", "edit", "admin"]
_RANK: dict[str, int] = {"viewer": 0, "editor": 1, "admin": 2}
_NEED_RANK: dict[Need, int] = {"view": 0, "edit": 1, "admin": 2}

PASSWORD_MIN = 12
#: Longer is refused: argon2 hashes any length, but a megabyte "password" is an attack.
PASSWORD_MAX = 1024

_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so an unknown email costs what a known
    one does (made on first use: a hash costs real time, and most commands never sign in)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class SignInLimits:
    """Failed sign-ins allowed within ``window`` per account and per client address."""

    per_account: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class SessionRules:
    """A session ends after ``idle`` without a request, and ``absolute`` after sign-in."""

    idle: timedelta = timedelta(hours=12)
    absolute: timedelta = timedelta(days=7)
    #: last_seen_at is written at most this often (not on every page view).
    touch_every: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class SignedInUser:
    """Who a request's session cookie belongs to."""

    user_id: str
    email: str
    role: Role
    workspace_id: str
    #: The token every form of this session carries (compared in constant time).
    csrf_token: str

    @property
    def principal(self) -> Principal:
        """The caller as the domain services know callers: the workspace, all its projects
        (what a workspace key may do; roles are checked before any service is called)."""
        return Principal(f"user:{self.user_id}", "workspace", self.workspace_id, None)

    def allows(self, need: Need) -> bool:
        return allows(self.role, need)


@dataclass(frozen=True)
class SignedIn:
    """A successful sign-in: the session's cookie token (shown to the browser only)."""

    user: SignedInUser
    token: str = ""

    def __repr__(self) -> str:  # the token never reaches a log
        return f"SignedIn(user={self.user.user_id!r})"


def allows(role: str, need: Need) -> bool:
    """Whether ``role`` may do what needs ``need`` (an unknown role may do nothing)."""
    rank = _RANK.get(role)
    return rank is not None and rank >= _NEED_RANK[need]


def _role(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise ValidationFailed(f"role must be one of {', '.join(ROLES)}", field="role")


def _password(value: str) -> str:
    if len(value) < PASSWORD_MIN:
        raise ValidationFailed(
            f"The password must have at least {PASSWORD_MIN} characters", field="password"
        )
    if len(value) > PASSWORD_MAX or not value.isprintable():
        raise ValidationFailed(
            f"The password must be at most {PASSWORD_MAX} printable characters", field="password"
        )
    return value


def _email(value: str) -> str:
    # Sign-in compares lower-cased: Ada@Example.com and ada@example.com are one account.
    return canonical_address(value.strip(), field="email").lower()


def create_user(session: Session, workspace_id: str, email: str, role: str, password: str) -> User:
    """A new user of the workspace. ``validation_error`` (field email, role or password),
    ``not_found`` for an unknown workspace, ``conflict`` when the email has an account."""
    address, role_, secret = _email(email), _role(role), _password(password)
    if tenancy_store.get_workspace(session, workspace_id) is None:
        raise NotFound("workspace")
    if store.by_email(session, address) is not None:
        raise DomainError("conflict", f"{address} already has an account", extra={"field": "email"})
    return store.add_user(
        session, new_id("usr"), workspace_id, address, role_, _HASHER.hash(secret)
    )


def set_password(session: Session, user_id: str, password: str) -> User:
    """A new password; every session of the user ends."""
    user = store.get(session, user_id)
    if user is None:
        raise NotFound("user")
    user.password_hash = _HASHER.hash(_password(password))
    store.delete_sessions_of(session, user_id)
    return user


def ensure_user(session: Session, workspace_id: str, email: str, role: str, password: str) -> User:
    """The user with ``email`` in ``workspace_id`` with this role and password (created, or
    reset: its sessions end). Dev mode's admin; ``conflict`` if the email is another
    workspace's."""
    address = _email(email)
    user = store.by_email(session, address)
    if user is None:
        return create_user(session, workspace_id, address, role, password)
    if user.workspace_id != workspace_id:
        raise DomainError("conflict", f"{address} has an account in another workspace")
    user.role = _role(role)
    return set_password(session, user.id, password)


def users_of(session: Session, workspace_id: str) -> Sequence[User]:
    return store.of_workspace(session, workspace_id)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _buckets(email: str, address: str) -> tuple[str, str]:
    return f"account:{email.strip().lower()[:320]}", f"address:{address[:64]}"


def throttled(
    session: Session, email: str, address: str, limits: SignInLimits, at: datetime
) -> DomainError | None:
    """``sign_in_throttled`` (with Retry-After) if the account or the address is at its
    limit of failures within the window; None otherwise."""
    account, client = _buckets(email, address)
    limit_of = {account: limits.per_account, client: limits.per_address}
    waits = [
        row.window_start + limits.window - at
        for row in store.failures(session, [account, client])
        if row.failures >= limit_of[row.bucket] and row.window_start + limits.window > at
    ]
    if not waits:
        return None
    seconds = max(1, math.ceil(max(waits).total_seconds()))
    minutes = math.ceil(seconds / 60)
    return DomainError(
        "sign_in_throttled",
        f"Too many failed sign-ins; try again in {minutes} minute{'s' * (minutes != 1)}",
        headers={"Retry-After": str(seconds)},
    )


def sign_in(
    session: Session,
    email: str,
    password: str,
    address: str,
    *,
    limits: SignInLimits | None = None,
    rules: SessionRules | None = None,
    at: datetime | None = None,
) -> SignedIn | DomainError:
    """A new session for the account, or the refusal to show: ``sign_in_throttled`` or
    ``sign_in_failed`` (the same for an unknown email and a wrong password). Failures are
    counted in this transaction: commit it whatever the outcome."""
    limits, rules, at = limits or SignInLimits(), rules or SessionRules(), at or now()
    refusal = throttled(session, email, address, limits, at)
    if refusal is not None:
        return refusal
    account, client = _buckets(email, address)
    user = store.by_email(session, email.strip().lower()) if len(email) <= 320 else None
    ok = False
    if len(password) <= PASSWORD_MAX:
        try:
            ok = _HASHER.verify(user.password_hash if user else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            ok = False
    if user is None or not ok:
        cutoff = at - limits.window
        store.count_failure(session, account, at, cutoff)
        store.count_failure(session, client, at, cutoff)
        return DomainError("sign_in_failed", "Wrong email or password")
    store.clear_failures(session, account)
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    user.last_sign_in_at = at
    store.delete_expired_sessions(session, at)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    store.add_session(session, _hash_token(token), user.id, csrf, at, at + rules.idle)
    return SignedIn(_signed_in(user, csrf), token)


def _signed_in(user: User, csrf: str) -> SignedInUser:
    return SignedInUser(user.id, user.email, _role(user.role), user.workspace_id, csrf)


def session_user(
    session: Session, token: str, *, rules: SessionRules | None = None, at: datetime | None = None
) -> SignedInUser | None:
    """The user of a live session (its idle expiry pushed on), or None: no such session,
    or it ended (idle too long, past its absolute limit: it is deleted then)."""
    rules, at = rules or SessionRules(), at or now()
    if not token or len(token) > 200:
        return None
    token_hash = _hash_token(token)
    found = store.session_with_user(session, token_hash)
    if found is None:
        return None
    row, user = found
    if row.expires_at <= at or row.created_at + rules.absolute <= at:
        store.delete_session(session, token_hash)
        return None
    if at - row.last_seen_at >= rules.touch_every:
        until = min(at + rules.idle, row.created_at + rules.absolute)
        store.touch_session(session, token_hash, at, until)
    return _signed_in(user, row.csrf_token)


def sign_out(session: Session, token: str) -> None:
    """End the session (an unknown token is no error: it is ended already)."""
    if token and len(token) <= 200:
        store.delete_session(session, _hash_token(token))


def csrf_matches(user: SignedInUser, presented: str | None) -> bool:
    """Whether a form's token is the session's (constant-time)."""
    return bool(presented) and hmac.compare_digest(
        user.csrf_token.encode(), (presented or "").encode()
    )


__all__ = [
    "PASSWORD_MIN",
    "ROLES",
    "Need",
    "Role",
    "SessionRules",
    "SignInLimits",
    "SignedIn",
    "SignedInUser",
    "allows",
    "create_user",
    "csrf_matches",
    "ensure_user",
    "session_user",
    "set_password",
    "sign_in",
    "sign_out",
    "throttled",
    "users_of",
]
