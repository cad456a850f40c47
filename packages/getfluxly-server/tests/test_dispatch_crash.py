"""The delivery crash test, short version: 300 messages, the ``getfluxly worker`` process
killed with SIGKILL three times while it sends, on SQLite and PostgreSQL (the long version
is ``bench/delivery_crash.py``). Every message ends ``sent`` or ``unknown``; none is missing;
none reached the relay twice unless recorded ``unknown``. How many are unknown is printed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from flux_testkit import delivery_crash, ledger
from flux_testkit.smtpd import SMTPTestServer
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import MESSAGE_ID_HEADER
from getfluxly_server.storage.db import Database

if TYPE_CHECKING:
    from flux_testkit.gfserver import Backend, GFDatabase, Harness
    from flux_testkit.pytest_fixtures import GFServerFactory


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workers_killed_mid_send_lose_nothing_and_double_nothing(
    gf_harness: Harness, gf_backend: Backend, tmp_path: Path
) -> None:
    report = delivery_crash.run(gf_harness, gf_backend, tmp_path, messages=300, kills=3)
    print(json.dumps(report.summary()))
    assert report.ok, report.summary()
    assert report.statuses.get("sent", 0) > 0
    assert report.received >= report.statuses["sent"]


@pytest.mark.slow
def test_getfluxly_serve_delivers_a_queued_message_promptly(
    gf_server_factory: GFServerFactory, gf_database: GFDatabase
) -> None:
    """The delivery loop runs inside ``getfluxly serve`` (beside the job worker) and stops
    with it; a message committed while it is idle is picked up without waiting for a poll
    on PostgreSQL (LISTEN) and within the poll interval on SQLite."""
    server = gf_server_factory(env={"GETFLUXLY_LOG_LEVEL": "WARNING"})
    db = Database(gf_database.sqlalchemy_url)
    try:
        with SMTPTestServer(auth=True, pipelining=True) as relay:
            keyring = Keyring.parse(server.encryption_keys)
            project = ledger.make_project(db, gf_database.workspace.id)
            provider = ledger.add_provider(
                db, keyring, project, ledger.smtp_body(relay.host, relay.port)
            )
            [message_id] = ledger.queue_messages(db, project, provider, ["ada@example.com"])
            [received] = relay.wait_for_messages(1, timeout=15)
            assert received.message[MESSAGE_ID_HEADER] == message_id
            deadline = time.monotonic() + 15
            while gf_database.query(
                "SELECT status FROM messages WHERE id = :id", id=message_id
            ) != [{"status": "sent"}]:
                assert time.monotonic() < deadline, server.logs()[-3000:]
                time.sleep(0.05)
        server.stop()
        assert server.process is not None
        assert server.process.returncode in (0, -15, 143)
    finally:
        db.dispose()
