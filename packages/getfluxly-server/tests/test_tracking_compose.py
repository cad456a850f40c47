"""What the ledger and the delivery check do with tracking and subscription groups, on
SQLite and PostgreSQL, as automations and broadcasts use them (``domain.messages.Source``).

Contract: ``Source.tracking`` and ``Source.subscription_group`` are kept on every message
recorded; a group must be one of the project's and only on marketing mail. At claim time
(``domain.delivery.compose.load``) a marketing message whose recipient left its group, or
unsubscribed, is ``suppressed``; transactional mail still goes to an address that only
unsubscribed (a bounce stops it). Composed with the server's links, marketing mail carries
the one-click headers and transactional mail does not; ``tracking`` off leaves the HTML as
written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from flux_testkit import ledger
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.delivery.compose import LEFT_GROUP, Composer, load
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.messages import BulkRecipient, Content, Source, enqueue_many
from getfluxly_server.domain.suppressions import suppressed_detail
from getfluxly_server.domain.tracking import links_for
from getfluxly_server.storage import outbox, preferences, suppressions
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Message

if TYPE_CHECKING:
    from flux_testkit.gfserver import GFDatabase

KEYRING = Keyring.parse(Keyring.generate("k1"))
LINKS = links_for("https://mail.example.com", KEYRING)
HTML = '<p><a href="https://shop.example.com/">Shop</a></p>'


def _queue(db: Database, project: str, emails: list[str], source: Source) -> list[str]:
    origin = f"{source.origin}-{source.step_id}-{source.transactional}"
    bulk = [BulkRecipient(email=e, idempotency_key=f"{origin}-{e}") for e in emails]
    with db.transaction() as session:
        done = enqueue_many(session, project, bulk, Content(subject="Hi", html=HTML), source)
    return done.created


def test_sources_choices_reach_the_relay_check_and_the_composed_mail(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project = ledger.make_project(gf_db, gf_database.workspace.id)
    ledger.add_provider(gf_db, KEYRING, project, ledger.smtp_body("127.0.0.1", 2525))
    with gf_db.transaction() as session:
        preferences.replace_groups(session, project, [("weekly", "Weekly", None)])
    broadcast = Source(origin="broadcast", broadcast_id="brd_1", transactional=False,
                       tracking=False, subscription_group="weekly")  # fmt: skip
    automation = Source(origin="automation", automation_id="aut_1", step_id="s1")
    stays, leaves, unsubscribes = "stays@example.com", "leaves@example.com", "gone@example.com"
    marketing = _queue(gf_db, project, [stays, leaves, unsubscribes], broadcast)
    receipt = _queue(gf_db, project, [unsubscribes], automation)
    with gf_db.read() as session:
        rows = [session.get(Message, i) for i in marketing]
        assert {(r.tracking, r.subscription_group) for r in rows if r} == {(False, "weekly")}
        first = session.get(Message, receipt[0])
        assert first is not None
        assert (first.tracking, first.subscription_group) == (True, None)

    # After they were queued: one leaves the group, one unsubscribes from everything.
    with gf_db.transaction() as session:
        preferences.set_choices(session, project, "Leaves@Example.com", {"weekly": False})
        suppressions.add_if_absent(session, project, unsubscribes, "unsubscribed")
        claimed = outbox.claim(session, "test-worker", timedelta(minutes=1), 100).messages
    with gf_db.read() as session:
        context = load(session, claimed)
    composed = Composer(gf_db, links=LINKS).compose(claimed, context)

    by_id = {m.id: m for m in claimed}
    decided = {by_id[v.id].to_email: (v.status, v.detail) for v in composed.decided}
    assert decided == {
        leaves: ("suppressed", LEFT_GROUP.format("weekly")),
        unsubscribes: ("suppressed", suppressed_detail("unsubscribed")),
    }
    [ready] = composed.ready.values()
    sent = {(m.to_email, m.transactional): email for m, email in ready}
    assert set(sent) == {(stays, False), (unsubscribes, True)}
    newsletter = sent[stays, False]
    assert newsletter.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert newsletter.headers["List-Unsubscribe"].startswith(
        "<https://mail.example.com/unsubscribe/"
    )
    assert newsletter.html == HTML  # tracking off: as written
    transactional = sent[unsubscribes, True]
    assert "List-Unsubscribe" not in transactional.headers
    assert transactional.html is not None
    assert "https://mail.example.com/t/c/" in transactional.html  # tracking on by default
    assert "https://mail.example.com/t/o/" in transactional.html

    # A bounce stops transactional mail too.
    with gf_db.transaction() as session:
        suppressions.remove(session, project, unsubscribes)
        suppressions.add_if_absent(session, project, unsubscribes, "hard_bounce")
        assert suppressions.suppressed(session, project, [unsubscribes], transactional=True)
    late = _queue(gf_db, project, [unsubscribes], Source(origin="automation", step_id="s2"))
    with gf_db.read() as session:
        row = session.get(Message, late[0])
        assert row is not None
        assert row.status == "suppressed"


def test_a_group_must_be_the_projects_and_on_marketing_mail(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    project = ledger.make_project(gf_db, gf_database.workspace.id)
    ledger.add_provider(gf_db, KEYRING, project, ledger.smtp_body("127.0.0.1", 2525))
    for source in (
        Source(transactional=False, subscription_group="weekly"),  # not defined
        Source(transactional=True, subscription_group="weekly"),
    ):
        with pytest.raises(ValidationFailed) as raised:
            _queue(gf_db, project, ["a@example.com"], source)
        assert raised.value.extra["field"] == "subscription_group"
    with gf_db.transaction() as session:
        preferences.replace_groups(session, project, [("weekly", "Weekly", None)])
    assert _queue(gf_db, project, ["a@example.com"],
                  Source(transactional=False, subscription_group="weekly"))  # fmt: skip


def test_a_templates_unsubscribe_link_is_the_one_in_the_header(
    gf_db: Database, gf_database: GFDatabase
) -> None:
    """Marketing mail: ``{{ unsubscribe_url }}`` in the text is the List-Unsubscribe link
    (one signed token per message), and it names the message; transactional mail gets a
    link of its own and no header."""
    project = ledger.make_project(gf_db, gf_database.workspace.id)
    ledger.add_provider(gf_db, KEYRING, project, ledger.smtp_body("127.0.0.1", 2525))
    content = Content(subject="Hi", text="Leave: {{ unsubscribe_url }} / {{ preferences_url }}")
    with gf_db.transaction() as session:
        for transactional in (False, True):
            source = Source(origin="automation", step_id=str(transactional),
                            transactional=transactional)  # fmt: skip
            bulk = [BulkRecipient(email="ann@example.com", idempotency_key=str(transactional))]
            enqueue_many(session, project, bulk, content, source)
        claimed = outbox.claim(session, "test-worker", timedelta(minutes=1), 10).messages
    with gf_db.read() as session:
        context = load(session, claimed)
    [ready] = Composer(gf_db, links=LINKS).compose(claimed, context).ready.values()
    texts = {m.transactional: (m.id, e) for m, e in ready}
    message_id, marketing = texts[False]
    link = marketing.headers["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    assert marketing.text.startswith(f"Leave: {link} / https://mail.example.com/preferences/")
    assert LINKS.unsubscribing(link.rpartition("/")[2]) == message_id
    message_id, transactional = texts[True]
    assert "List-Unsubscribe" not in transactional.headers
    own = transactional.text.split()[1]
    assert own.startswith("https://mail.example.com/unsubscribe/")
    assert LINKS.unsubscribing(own.rpartition("/")[2]) == message_id
