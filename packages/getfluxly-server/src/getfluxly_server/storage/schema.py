"""Bringing a database to the current schema with the packaged Alembic migrations."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from getfluxly_server.storage.db import Database


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "getfluxly_server:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(db: Database) -> None:
    """Apply every migration not yet applied (idempotent; never loses data)."""
    config = alembic_config(db.url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_current(db: Database) -> bool:
    """Whether the database is at the newest migration (serve refuses to start otherwise)."""
    script = ScriptDirectory.from_config(alembic_config(db.url))
    with db.engine.connect() as connection:
        return (
            MigrationContext.configure(connection).get_current_revision()
            == script.get_current_head()
        )
