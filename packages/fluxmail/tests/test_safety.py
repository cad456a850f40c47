"""Header injection and SMTP smuggling: bad input is refused before anything is sent."""

from __future__ import annotations

import pytest

from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail, FluxMailException

INJECTIONS = [
    "x\r\nBcc: victim@example.com",
    "x\nBcc: victim@example.com",
    "x\rBcc: victim@example.com",
    "x\x00y",
    "x\x0bBcc: victim@example.com",
    "x\u2028Bcc: victim@example.com",
    "x\x85y",
]


@pytest.mark.parametrize("evil", INJECTIONS)
@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("subject", "invalid_params"),
        ("recipient", "invalid_email"),
        ("cc", "invalid_email"),
        ("bcc", "invalid_email"),
        ("reply_to", "invalid_email"),
        ("sender", "invalid_email"),
        ("display_name", "invalid_email"),
        ("in_reply_to", "invalid_params"),
        ("references", "invalid_params"),
        ("unsubscribe_url", "invalid_params"),
    ],
)
def test_control_characters_refused_in_every_header(
    mailer: FluxMail, plain_smtp: SMTPTestServer, field: str, code: str, evil: str
) -> None:
    kwargs: dict[str, object] = {"subject": "s", "recipients": ["to@example.com"], "body": "b"}
    address = "a@example.com" + evil
    match field:
        case "subject":
            kwargs["subject"] = evil
        case "recipient":
            kwargs["recipients"] = [address]
        case "cc" | "bcc":
            kwargs[field] = [address]
        case "reply_to" | "sender":
            kwargs[field] = address
        case "display_name":
            kwargs["recipients"] = [f"Eve{evil} <eve@example.com>"]
        case "in_reply_to":
            kwargs["in_reply_to"] = "<id@example.com>" + evil
        case "references":
            kwargs["references"] = ["<id@example.com>" + evil]
        case "unsubscribe_url":
            kwargs["unsubscribe_url"] = "https://example.com/u" + evil
    with pytest.raises(FluxMailException) as info:
        mailer.create(**kwargs).send()
    assert info.value.code == code
    assert plain_smtp.connections == 0  # refused before any connection


def test_body_cannot_end_data_early(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    smuggled = (
        "Hello\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
        "Subject: smuggled\r\n\r\nowned\r\n.\r\n"
    )
    for variant in (smuggled, smuggled.replace("\n.\r\n", "\r\n.\n"), smuggled.replace("\r", "")):
        mailer.create("Legit", ["to@example.com"], variant).send()
    received = plain_smtp.wait_for_messages(3)
    assert len(plain_smtp.messages) == 3
    assert all(m.message["Subject"] == "Legit" for m in received)
    assert all(m.rcpt_tos == ["to@example.com"] for m in received)
    assert not any("evil@example.com" in c for c in plain_smtp.commands)


def test_ready_made_message_body_is_normalised(
    mailer: FluxMail, plain_smtp: SMTPTestServer
) -> None:
    from fluxmail.protocol.commands import Envelope

    raw = b"Subject: raw\n\nline\n.\nMAIL FROM:<evil@example.com>\n"
    mailer.send_message(raw, envelope=Envelope("a@example.com", ("to@example.com",)))
    (received,) = plain_smtp.wait_for_messages(1)
    assert b".\r\nMAIL FROM" in received.data  # the dot line arrived as content
    assert not any("evil" in c for c in plain_smtp.commands)


def test_custom_headers_checked(mailer: FluxMail) -> None:
    with pytest.raises(FluxMailException) as info:
        mailer.create("s", ["to@example.com"], "b", headers={"X-Tag": "a\r\nBcc: v@example.com"})
    assert info.value.code == "invalid_params"


@pytest.mark.parametrize(
    "body",
    [
        {"body": "caf\udce9"},  # what errors="surrogateescape" makes of a Latin-1 byte
        {"body": "<p>\ud800</p>", "html_body": True},
        {"body": "<p>ok</p>", "html_body": True, "plain_body": "ok \udfff"},
    ],
)
def test_a_lone_surrogate_in_a_body_is_refused_saying_where(
    mailer: FluxMail, plain_smtp: SMTPTestServer, body: dict[str, object]
) -> None:
    with pytest.raises(FluxMailException) as info:
        mailer.create(subject="s", recipients=["to@example.com"], **body).send()
    assert info.value.code == "invalid_params"
    assert "lone surrogate" in str(info.value)
    assert "position" in str(info.value)
    assert plain_smtp.connections == 0


@pytest.mark.parametrize(
    "value",
    [
        "to@example.com\n",
        "to@example.com\r\nBcc: spy@example.com",
        "to@example.com\x00",
        "to@example.com\x85",
        "to@example.com\u2028",
        "to@example.com>",
        "to@exa mple.com",
        "to@-example.com",
        "to..x@example.com",
        "to@example.com,spy@example.com",
    ],
)
def test_bare_addresses_that_are_not_quite_are_refused(mailer: FluxMail, value: str) -> None:
    """The builder keeps a bare ASCII address as a string after one regular expression; any
    address that regular expression does not take whole goes through parse_address, with
    every check (line breaks, controls, brackets, lists)."""
    for role in ("recipients", "cc", "bcc"):
        with pytest.raises(FluxMailException) as info:
            mailer.create("S", **{"recipients": ["ok@example.com"], role: [value]}, body="B")  # type: ignore[arg-type]
        assert info.value.code == "invalid_email", (role, value)
    with pytest.raises(FluxMailException) as info:
        mailer.create("S", ["ok@example.com"], "B", sender=value)
    assert info.value.code == "invalid_email"


def test_bare_and_parsed_addresses_write_the_same_headers(mailer: FluxMail) -> None:
    """A bare address (kept as a string) and the same mailbox parsed (blanks around it take
    the general path) give the same headers and envelope."""
    bare = mailer.create("S", ["to@example.com"], "B", cc=["cc@example.com"])._draft
    parsed = mailer.create("S", [" to@example.com "], "B", cc=["<cc@example.com>"])._draft
    assert bare is not None
    assert parsed is not None
    assert bare.envelope == parsed.envelope
    for name in (b"To: ", b"Cc: ", b"From: "):
        line = next(x for x in bare.data.split(b"\r\n") if x.startswith(name))
        assert line in parsed.data.split(b"\r\n")
    assert bare.to == parsed.to == ["to@example.com"]
