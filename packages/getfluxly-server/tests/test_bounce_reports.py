"""Parsing what the bounce mailbox receives: DSNs as Postfix and Exim write them (RFC 3464),
an ARF complaint (RFC 5965), and mail that is no report at all.

The fixtures (``flux_testkit/bounce_reports/``) are written by hand after the MTAs'
documented formats (Postfix's bounce(5) templates and its ``X-Postfix-*`` fields, Exim's
``multipart/report`` bounces with ``X-Failed-Recipients``); ``$names`` in them are filled
per test (``flux_testkit.outbound.bounce_report``).
"""

from __future__ import annotations

import pytest

from flux_testkit.outbound import LEDGER_ID, VERP
from flux_testkit.outbound import bounce_report as report
from getfluxly_server.domain.bounce_mailbox import reports, verp


def test_a_postfix_hard_bounce() -> None:
    [finding] = reports.parse(report("postfix_hard.eml"))
    assert (finding.kind, finding.bounce_type, finding.status) == ("bounced", "hard", "5.1.1")
    assert finding.recipient == "nobody@recipient.test"
    assert finding.reason is not None
    assert finding.reason.startswith("smtp; 550 5.1.1 <nobody@recipient.test>: Recipient address")
    assert "User unknown in virtual mailbox table" in finding.reason  # the folded line, joined
    assert finding.report_id == "<20261203061002.4Sk2Yq0Tq3z9rxL@mail.sender.test>"
    assert finding.original == reports.Original(
        getfluxly_id=LEDGER_ID,
        message_id="20261203061000.abc123@app.sender.test",
        return_path=f"<{VERP}>",
    )
    assert verp.message_id_of(finding.sender) == LEDGER_ID  # X-Postfix-Sender


def test_a_postfix_delay_warning_is_a_deferral() -> None:
    [finding] = reports.parse(report("postfix_delayed.eml"))
    assert (finding.kind, finding.bounce_type, finding.status) == ("deferred", None, "4.2.2")
    assert finding.reason == "smtp; 452 4.2.2 Mailbox full"


def test_an_exim_bounce_with_the_original_attached() -> None:
    [finding] = reports.parse(report("exim_failed.eml"))
    assert (finding.kind, finding.bounce_type) == ("bounced", "hard")
    assert finding.recipient == "nobody@recipient.test"
    assert finding.original.getfluxly_id == LEDGER_ID
    assert finding.original.message_id == "20261203061000.abc123@app.sender.test"


def test_an_mta_giving_up_on_a_temporary_failure_is_a_soft_bounce() -> None:
    raw = report("exim_failed.eml", status="4.2.2", smtp_reply="452 4.2.2 Mailbox full")
    [finding] = reports.parse(raw)
    assert (finding.kind, finding.bounce_type) == ("bounced", "soft")


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [
        ("", "550 5.7.1 Blocked by policy", "hard"),  # no Status: the enhanced code
        ("", "452 Too many recipients", "soft"),  # no enhanced code: the reply code
        ("", "connection timed out", "hard"),  # nothing to go by: a failure is hard
    ],
)
def test_without_a_status_the_diagnostic_decides(status: str, reply: str, expected: str) -> None:
    raw = report("exim_failed.eml", status=status, smtp_reply=reply)
    [finding] = reports.parse(raw)
    assert finding.bounce_type == expected


def test_an_arf_abuse_report_is_a_complaint() -> None:
    [finding] = reports.parse(report("arf_abuse.eml"))
    assert finding.kind == "complained"
    assert finding.recipient == "nobody@recipient.test"
    assert finding.reason == "feedback-type abuse (RecipientFBL/1.0)"
    assert finding.original.getfluxly_id == LEDGER_ID
    assert verp.message_id_of(finding.sender) == LEDGER_ID  # Original-Mail-From


def test_feedback_that_is_not_a_complaint_is_ignored() -> None:
    raw = report("arf_abuse.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert reports.parse(raw) == []


GARBAGE = [
    b"",
    b"\x00\xff\xfe" * 100,
    b"Subject: out of office\r\n\r\nI am away until Monday.\r\n",
    # A report whose boundary never appears.
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\nhello\r\n",
    # A delivery-status part of nonsense.
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\n:::\r\n\r\n\x00\r\n--b--\r\n",
    # Another report type.
    b"Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nread\r\n--b--\r\n",
    b"Content-Type: multipart/report\r\n\r\nno boundary at all\r\n",
]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_gives_nothing_and_never_raises(raw: bytes) -> None:
    assert reports.parse(raw) == []


def test_verp_round_trip() -> None:
    assert verp.return_path(LEDGER_ID, "bounces.example.test") == VERP
    assert verp.return_path("not-a-ledger-id", "bounces.example.test") is None
    assert verp.message_id_of(VERP.upper()) == LEDGER_ID  # an MTA that upper-cased it
    assert verp.message_id_of(f"rfc822; {VERP}", "bounces.example.test") == LEDGER_ID
    assert verp.message_id_of(VERP, "elsewhere.test") is None
    assert verp.message_id_of("bounces+msg_short@bounces.example.test") is None
