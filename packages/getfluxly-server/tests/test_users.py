"""Dashboard users (``domain.users``) on SQLite and PostgreSQL: accounts and their checks,
argon2id hashes, sessions (idle and absolute expiry, sign-out, a password change ends them),
the sign-in throttle per account and per address, and ``getfluxly users create`` as a
subprocess reading the password from stdin."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from flux_testkit.gfserver import GFDatabase, Harness, new_encryption_key
from getfluxly_server.domain import users
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import SignInFailure, User, UserSession, now

PASSWORD = "correct horse battery"
ADDRESS = "203.0.113.7"


def make_user(
    db: Database, workspace_id: str, email: str = "ada@example.com", role: str = "editor"
) -> str:
    with db.transaction() as session:
        return users.create_user(session, workspace_id, email, role, PASSWORD).id


def sign_in(
    db: Database, email: str, password: str, address: str = ADDRESS, **kwargs: object
) -> users.SignedIn | DomainError:
    with db.transaction() as session:
        return users.sign_in(session, email, password, address, **kwargs)  # type: ignore[arg-type]


def test_a_user_is_stored_with_an_argon2id_hash_only(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    make_user(gf_db, gf_database.workspace.id, "Ada@Example.COM")
    with gf_db.read() as session:
        [row] = session.scalars(select(User)).all()
        assert row.email == "ada@example.com"
        assert row.role == "editor"
        assert row.password_hash.startswith("$argon2id$")
        assert PASSWORD not in row.password_hash


@pytest.mark.parametrize(
    ("email", "role", "password", "field"),
    [
        ("not-an-address", "editor", PASSWORD, "email"),
        ("ada@example.com", "owner", PASSWORD, "role"),
        ("ada@example.com", "viewer", "short", "password"),
        ("ada@example.com", "viewer", "x" * 2000, "password"),
    ],
)
def test_bad_accounts_are_refused_naming_the_field(
    gf_db: Database, gf_database: GFDatabase, email: str, role: str, password: str, field: str
) -> None:
    with pytest.raises(DomainError) as refused, gf_db.transaction() as session:
        users.create_user(session, gf_database.workspace.id, email, role, password)
    assert refused.value.code == "validation_error"
    assert refused.value.extra["field"] == field
    with gf_db.read() as session:
        assert session.scalars(select(User)).all() == []


def test_an_email_has_one_account_and_the_workspace_must_exist(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    make_user(gf_db, gf_database.workspace.id)
    with pytest.raises(DomainError) as taken, gf_db.transaction() as session:
        users.create_user(session, gf_database.workspace.id, "ADA@example.com", "admin", PASSWORD)
    assert taken.value.code == "conflict"
    with pytest.raises(DomainError) as missing, gf_db.transaction() as session:
        users.create_user(session, "wsp_nope", "bob@example.com", "admin", PASSWORD)
    assert missing.value.code == "not_found"


def test_sign_in_makes_a_session_the_cookie_token_finds(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    user_id = make_user(gf_db, gf_database.workspace.id)
    outcome = sign_in(gf_db, " ADA@example.com ", PASSWORD)
    assert isinstance(outcome, users.SignedIn)
    assert outcome.token not in repr(outcome)
    with gf_db.transaction() as session:
        found = users.session_user(session, outcome.token)
        [stored] = session.scalars(select(UserSession)).all()
        assert stored.token_hash != outcome.token  # only its hash is kept
        assert users.session_user(session, outcome.token + "x") is None
    assert found is not None
    assert (found.user_id, found.role, found.workspace_id) == (
        user_id, "editor", gf_database.workspace.id,
    )  # fmt: skip
    assert found.principal.workspace_id == gf_database.workspace.id
    assert found.principal.project_id is None
    assert users.csrf_matches(found, found.csrf_token)
    assert not users.csrf_matches(found, "")
    assert not users.csrf_matches(found, found.csrf_token[:-1])

    with gf_db.transaction() as session:
        users.sign_out(session, outcome.token)
    with gf_db.transaction() as session:
        assert users.session_user(session, outcome.token) is None


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    make_user(gf_db, gf_database.workspace.id)
    wrong = sign_in(gf_db, "ada@example.com", "not the password")
    unknown = sign_in(gf_db, "nobody@example.com", PASSWORD)
    assert isinstance(wrong, DomainError)
    assert isinstance(unknown, DomainError)
    assert (wrong.code, wrong.detail) == (unknown.code, unknown.detail) == (
        "sign_in_failed", "Wrong email or password",
    )  # fmt: skip


def test_sessions_end_when_idle_and_at_their_absolute_limit(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    make_user(gf_db, gf_database.workspace.id)
    rules = users.SessionRules(idle=timedelta(hours=1), absolute=timedelta(hours=3))
    start = now()
    outcome = sign_in(gf_db, "ada@example.com", PASSWORD, rules=rules, at=start)
    assert isinstance(outcome, users.SignedIn)

    def user_at(hours: float) -> users.SignedInUser | None:
        with gf_db.transaction() as session:
            return users.session_user(
                session, outcome.token, rules=rules, at=start + timedelta(hours=hours)
            )

    # Used every 50 minutes, it lives on past its first hour...
    assert user_at(0.8) is not None
    assert user_at(1.6) is not None
    assert user_at(2.4) is not None
    # ...but not past three hours from sign-in, however recently it was used.
    assert user_at(3.0) is None
    with gf_db.read() as session:
        assert session.scalars(select(UserSession)).all() == []  # deleted when found ended

    again = sign_in(gf_db, "ada@example.com", PASSWORD, rules=rules, at=start)
    assert isinstance(again, users.SignedIn)
    with gf_db.transaction() as session:
        assert (
            users.session_user(session, again.token, rules=rules, at=start + timedelta(hours=1.01))
            is None
        )


def test_a_new_password_ends_every_session(gf_db: Database, gf_database: GFDatabase) -> None:
    user_id = make_user(gf_db, gf_database.workspace.id)
    first = sign_in(gf_db, "ada@example.com", PASSWORD)
    assert isinstance(first, users.SignedIn)
    with gf_db.transaction() as session:
        users.set_password(session, user_id, "a brand new password")
    with gf_db.transaction() as session:
        assert users.session_user(session, first.token) is None
    assert isinstance(sign_in(gf_db, "ada@example.com", PASSWORD), DomainError)
    assert isinstance(sign_in(gf_db, "ada@example.com", "a brand new password"), users.SignedIn)


def test_an_account_is_throttled_after_its_failures_even_with_the_right_password(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    make_user(gf_db, gf_database.workspace.id)
    limits = users.SignInLimits(per_account=3, per_address=100, window=timedelta(minutes=10))
    start = now()
    for attempt in range(3):
        # Each from another address: the account's own count is what stops them.
        refused = sign_in(
            gf_db, "ada@example.com", "guess", f"198.51.100.{attempt}", limits=limits, at=start
        )
        assert isinstance(refused, DomainError)
        assert refused.code == "sign_in_failed"
    throttled = sign_in(gf_db, "ada@example.com", PASSWORD, "198.51.100.9", limits=limits, at=start)
    assert isinstance(throttled, DomainError)
    assert throttled.code == "sign_in_throttled"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 600
    # Another account is not held back by this one's failures.
    make_user(gf_db, gf_database.workspace.id, "bob@example.com")
    assert isinstance(
        sign_in(gf_db, "bob@example.com", PASSWORD, limits=limits, at=start), users.SignedIn
    )
    # Once the window is over, the right password gets in again, and success clears the count.
    later = start + timedelta(minutes=10, seconds=1)
    assert isinstance(
        sign_in(gf_db, "ada@example.com", PASSWORD, limits=limits, at=later), users.SignedIn
    )
    with gf_db.read() as session:
        buckets = {row.bucket for row in session.scalars(select(SignInFailure))}
    assert "account:ada@example.com" not in buckets


def test_an_address_is_throttled_after_failures_across_accounts(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    make_user(gf_db, gf_database.workspace.id)
    limits = users.SignInLimits(per_account=100, per_address=4, window=timedelta(minutes=10))
    start = now()
    for n in range(4):  # one address guessing four different accounts
        assert isinstance(
            sign_in(gf_db, f"user{n}@example.com", "guess", limits=limits, at=start), DomainError
        )
    from_there = sign_in(gf_db, "ada@example.com", PASSWORD, limits=limits, at=start)
    assert isinstance(from_there, DomainError)
    assert from_there.code == "sign_in_throttled"
    # The same account from another address is let in.
    elsewhere = sign_in(gf_db, "ada@example.com", PASSWORD, "192.0.2.1", limits=limits, at=start)
    assert isinstance(elsewhere, users.SignedIn)
    # A failure after the window starts a new count of one.
    later = start + timedelta(minutes=11)
    assert isinstance(
        sign_in(gf_db, "x@example.com", "guess", limits=limits, at=later), DomainError
    )
    with gf_db.read() as session:
        row = session.get(SignInFailure, f"address:{ADDRESS}")
        assert row is not None
        assert row.failures == 1


def test_ensure_user_resets_the_dev_admin(gf_db: Database, gf_database: GFDatabase) -> None:
    workspace_id = gf_database.workspace.id
    with gf_db.transaction() as session:
        users.ensure_user(session, workspace_id, "admin@getfluxly.test", "admin", "first password!")
    first = sign_in(gf_db, "admin@getfluxly.test", "first password!")
    assert isinstance(first, users.SignedIn)
    with gf_db.transaction() as session:
        users.ensure_user(session, workspace_id, "admin@getfluxly.test", "admin", "second password")
    with gf_db.transaction() as session:
        assert users.session_user(session, first.token) is None
        assert len(users.users_of(session, workspace_id)) == 1
    assert isinstance(sign_in(gf_db, "admin@getfluxly.test", "second password"), users.SignedIn)


@pytest.mark.parametrize(
    ("role", "view", "edit", "admin"),
    [("viewer", True, False, False), ("editor", True, True, False), ("admin", True, True, True),
     ("owner", False, False, False)],
)  # fmt: skip
def test_roles(role: str, view: bool, edit: bool, admin: bool) -> None:
    allowed = tuple(users.allows(role, need) for need in ("view", "edit", "admin"))
    assert allowed == (view, edit, admin)


def test_the_cli_creates_a_user_from_the_password_on_stdin(
    gf_harness: Harness, gf_database: GFDatabase, gf_db: Database
) -> None:
    env = gf_harness.base_env(
        {
            "GETFLUXLY_DATABASE_URL": gf_database.url,
            "GETFLUXLY_ENCRYPTION_KEYS": new_encryption_key(),
        }
    )
    workspace_id = gf_database.workspace.id
    args = [
        "users",
        "create",
        "Viewer@Example.com",
        "--workspace",
        workspace_id,
        "--role",
        "viewer",
    ]
    made = gf_harness.run_cli(args, env, stdin=PASSWORD + "\n")
    body = json.loads(made.stdout)
    assert body["email"] == "viewer@example.com"
    assert body["role"] == "viewer"
    assert body["workspace_id"] == workspace_id
    assert body["user_id"].startswith("usr_")
    assert PASSWORD not in made.stdout + made.stderr
    assert isinstance(sign_in(gf_db, "viewer@example.com", PASSWORD), users.SignedIn)

    # Refusals: exit 2 with what was wrong, and nothing stored.
    for extra_args, stdin, expected in (
        (["other@example.com", "--workspace", workspace_id, "--role", "admin"], "", "no password"),
        (
            ["other@example.com", "--workspace", workspace_id, "--role", "admin"],
            "short\n",
            "at least 12",
        ),
        (
            ["viewer@example.com", "--workspace", workspace_id, "--role", "admin"],
            PASSWORD,
            "already has",
        ),
    ):
        refused = gf_harness.run_cli(
            ["users", "create", *extra_args], env, stdin=stdin, check=False
        )
        assert refused.returncode == 2, refused.stderr
        assert expected in refused.stderr
    with gf_db.read() as session:
        assert [u.email for u in session.scalars(select(User))] == ["viewer@example.com"]
