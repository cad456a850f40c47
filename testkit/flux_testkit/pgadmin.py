"""Dropping the PostgreSQL databases that tests and benchmarks create, reliably.

``DROP DATABASE … WITH (FORCE)`` ends the sessions still connected first, but PostgreSQL
refuses it (``InsufficientPrivilege``: "must be a member of the role whose process is being
terminated") when one of them belongs to no role the dropping role may signal. The test
role is no superuser, and two such sessions turn up: an autovacuum worker that began on the
database after a run's writes, and a session of the run that is still going away. A plain
``DROP DATABASE`` stops autovacuum workers itself and waits a few seconds for other
sessions, so that is the second try; both are repeated briefly before the drop is called
failed.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import errors
from psycopg import sql as pgsql

__all__ = ["drop_database"]

_FORCE = pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
_PLAIN = pgsql.SQL("DROP DATABASE IF EXISTS {}")


def _run(admin_url: str, statement: pgsql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


def drop_database(admin_url: str, name: str, *, patience: float = 30.0) -> None:
    """Drop database ``name`` (if it exists) through the role of ``admin_url``; raises the
    last refusal if it still exists after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            _run(admin_url, _FORCE.format(pgsql.Identifier(name)))
            return
        except errors.InsufficientPrivilege:
            pass
        try:
            _run(admin_url, _PLAIN.format(pgsql.Identifier(name)))
            return
        except (errors.InsufficientPrivilege, errors.ObjectInUse):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
