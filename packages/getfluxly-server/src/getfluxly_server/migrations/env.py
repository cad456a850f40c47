"""Alembic's entry point, run by :func:`getfluxly_server.storage.schema.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from getfluxly_server.storage.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "the caller sets sqlalchemy.url"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things: batch mode copies the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()

    given = config.attributes.get("connection")
    if given is not None:  # the caller's connection and transaction: theirs to commit
        run(given)
    else:
        with create_engine(url).begin() as connection:
            run(connection)
