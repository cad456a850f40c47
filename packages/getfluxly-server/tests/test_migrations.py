"""Migrations on SQLite and PostgreSQL: the schema they build is the models' schema, and an
upgrade keeps the data a database already holds.

Each test takes the harness's fresh database (migrated to head), steps it down with the
packaged migrations, puts in data the old schema allowed, and upgrades it again.
"""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Base
from getfluxly_server.storage.schema import alembic_config, is_current, upgrade


def _migrate(db: Database, revision: str, *, down: bool = False) -> None:
    config = alembic_config(db.url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_the_migrated_schema_is_the_models_schema(gf_db: Database) -> None:
    with gf_db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrading_to_0003_folds_duplicate_queued_jobs_and_keeps_every_other_job(
    gf_db: Database,
) -> None:
    _migrate(gf_db, "0002", down=True)
    assert not is_current(gf_db)
    rows = [
        ("events.process", "events.process:prj_a", "queued"),  # the oldest: stays queued
        ("events.process", "events.process:prj_a", "queued"),  # a duplicate: folded
        ("events.process", "events.process:prj_a", "done"),
        ("events.process", "events.process:prj_a", "running"),
        ("events.process", "events.process:prj_b", "queued"),
        ("providers.test_send", None, "queued"),
        ("providers.test_send", None, "queued"),
    ]
    with gf_db.engine.begin() as connection:
        for kind, unique_key, status in rows:
            connection.execute(
                text(
                    "INSERT INTO jobs (kind, unique_key, payload, status, run_at, attempts, "
                    "max_attempts, created_at) VALUES (:kind, :key, '{}', :status, "
                    "CURRENT_TIMESTAMP, 0, 5, CURRENT_TIMESTAMP)"
                ),
                {"kind": kind, "key": unique_key, "status": status},
            )
    upgrade(gf_db)
    assert is_current(gf_db)
    with gf_db.engine.connect() as connection:
        found = connection.execute(
            text("SELECT kind, unique_key, status, last_error FROM jobs ORDER BY id")
        ).all()
    assert [(k, u, s) for k, u, s, _ in found] == [
        ("events.process", "events.process:prj_a", "queued"),
        ("events.process", "events.process:prj_a", "done"),
        ("events.process", "events.process:prj_a", "done"),
        ("events.process", "events.process:prj_a", "running"),
        ("events.process", "events.process:prj_b", "queued"),
        ("providers.test_send", None, "queued"),
        ("providers.test_send", None, "queued"),
    ]
    assert "folded" in (found[1][3] or "")
    # And the new index holds: a second queued job with the same key is refused.
    with pytest.raises(IntegrityError), gf_db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (kind, unique_key, payload, status, run_at, attempts, "
                "max_attempts, created_at) VALUES ('events.process', 'events.process:prj_b', "
                "'{}', 'queued', CURRENT_TIMESTAMP, 0, 5, CURRENT_TIMESTAMP)"
            )
        )


def test_upgrading_to_0006_keeps_recorded_answers_as_the_server_keys(gf_db: Database) -> None:
    """0006 puts idempotency keys in a namespace per kind of key and adds the body hash:
    answers recorded before it are kept (as the server key's, with no hash: replayed as
    before), the same key may then be recorded once per kind, and downgrading keeps the
    server key's answers."""
    _migrate(gf_db, "0005", down=True)
    with gf_db.engine.begin() as connection:
        workspace = connection.execute(text("SELECT id FROM workspaces")).scalar_one()
        connection.execute(
            text(
                "INSERT INTO projects (id, workspace_id, name, created_at) "
                "VALUES ('prj_m', :w, 'M', CURRENT_TIMESTAMP)"
            ),
            {"w": workspace},
        )
        connection.execute(
            text(
                "INSERT INTO idempotent_responses (project_id, key, status, body, created_at) "
                "VALUES ('prj_m', 'k-1', 202, '{\"accepted\": 1}', CURRENT_TIMESTAMP)"
            )
        )
    upgrade(gf_db)
    assert is_current(gf_db)
    with gf_db.engine.begin() as connection:
        found = connection.execute(
            text("SELECT key_kind, key, body_hash, status FROM idempotent_responses")
        ).all()
        assert [tuple(r) for r in found] == [("secret", "k-1", None, 202)]
        connection.execute(
            text(
                "INSERT INTO idempotent_responses (project_id, key_kind, key, body_hash, "
                "status, body, created_at) VALUES ('prj_m', 'publishable', 'k-1', 'h', 202, "
                "'{}', CURRENT_TIMESTAMP)"
            )
        )
    with pytest.raises(IntegrityError), gf_db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotent_responses (project_id, key_kind, key, status, body, "
                "created_at) VALUES ('prj_m', 'secret', 'k-1', 202, '{}', CURRENT_TIMESTAMP)"
            )
        )
    _migrate(gf_db, "0005", down=True)
    with gf_db.engine.connect() as connection:
        kept = connection.execute(text("SELECT key, status FROM idempotent_responses")).all()
    assert [tuple(r) for r in kept] == [("k-1", 202)]
    upgrade(gf_db)


def test_upgrading_to_0004_keeps_every_job_and_makes_test_sends_transactional(
    gf_db: Database,
) -> None:
    _migrate(gf_db, "0003", down=True)
    assert not is_current(gf_db)
    rows = [
        ("events.process", "events.process:prj_a", "queued"),
        ("profiles.erase", None, "running"),
        ("provider.test_send", None, "queued"),
        ("provider.test_send", None, "done"),
    ]
    with gf_db.engine.begin() as connection:
        for kind, unique_key, status in rows:
            connection.execute(
                text(
                    "INSERT INTO jobs (kind, unique_key, payload, status, run_at, attempts, "
                    "max_attempts, created_at) VALUES (:kind, :key, '{}', :status, "
                    "CURRENT_TIMESTAMP, 0, 5, CURRENT_TIMESTAMP)"
                ),
                {"kind": kind, "key": unique_key, "status": status},
            )
    upgrade(gf_db)
    assert is_current(gf_db)
    with gf_db.engine.connect() as connection:
        found = connection.execute(
            text("SELECT kind, unique_key, status, priority FROM jobs ORDER BY id")
        ).all()
    assert [tuple(row) for row in found] == [
        ("events.process", "events.process:prj_a", "queued", 100),
        ("profiles.erase", None, "running", 100),
        ("provider.test_send", None, "queued", 0),
        ("provider.test_send", None, "done", 0),
    ]
    # And back down: the column goes, the rows stay.
    _migrate(gf_db, "0003", down=True)
    with gf_db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 4
    upgrade(gf_db)
