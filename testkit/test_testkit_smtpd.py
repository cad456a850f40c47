"""Self-test of flux_testkit: the SMTP test server, driven only by the stdlib's smtplib."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING

import pytest

from flux_testkit import certs
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port

if TYPE_CHECKING:
    # Importing the plugin module at runtime, before pytest registers it below, would stop
    # pytest from rewriting its asserts (and warn, which -W error makes fatal).
    from flux_testkit.pytest_fixtures import SMTPServerFactory

pytest_plugins = ["flux_testkit.pytest_fixtures"]

USER = "user@example.com"
PASSWORD = "s3cret-pass"
SENDER = "sender@example.com"
RCPT = "rcpt@example.com"
RAW = b"From: sender@example.com\r\nTo: rcpt@example.com\r\nSubject: Hello\r\n\r\nBody line\r\n"
TOKEN = "ya29.test-access-token"  # DEFAULT_OAUTH_TOKENS' token of USER


def connect(server: SMTPTestServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=10)


def send_raw(server: SMTPTestServer, raw: bytes = RAW, rcpts: list[str] | None = None) -> None:
    with connect(server) as client:
        client.sendmail(SENDER, rcpts or [RCPT], raw)


def features(client: smtplib.SMTP) -> set[str]:
    client.ehlo()
    return set(client.esmtp_features)


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """For counters the server thread updates after the client already saw the outcome."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- plain delivery and recording -------------------------------------------------------------


def test_plain_send_records_message(plain_smtp: SMTPTestServer) -> None:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = RCPT
    msg["Subject"] = "Grüße"
    msg.set_content("first\n.leading dot\nlast\n")
    with connect(plain_smtp) as client:
        assert client.send_message(msg) == {}

    [received] = plain_smtp.wait_for_messages(1)
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [RCPT]
    assert received.message["Subject"] == "Grüße"
    # smtplib dot-stuffs ".leading dot"; the server hands back the un-stuffed line.
    assert b"\r\n.leading dot\r\n" in received.data
    assert received.data.endswith(b"last\r\n")
    assert received.message.get_content() == "first\n.leading dot\nlast\n"
    assert received.tls is False
    assert received.tls_version is None
    assert received.auth_user is None
    assert received.peer[0] == "127.0.0.1"
    assert received.rcpt_options == [[]]
    assert plain_smtp.rejected == []


def test_data_is_exact_bytes(plain_smtp: SMTPTestServer) -> None:
    raw = b"Subject: x\r\n\r\n..two dots\r\n\xc3\xa9 8bit\r\nno newline at end"
    send_raw(plain_smtp, raw)
    [received] = plain_smtp.wait_for_messages(1)
    # smtplib stuffs the leading dot and appends the CRLF before the terminator.
    assert received.data == raw + b"\r\n"


def test_null_sender_is_empty_string(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        client.sendmail("", [RCPT], RAW)
    assert plain_smtp.wait_for_messages(1)[0].mail_from == ""


def test_commands_are_recorded_without_content(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        client.ehlo("client.example")
        client.sendmail(SENDER, [RCPT], RAW)
    plain_smtp.wait_for_messages(1)
    assert [c.upper() for c in plain_smtp.commands] == [
        "EHLO CLIENT.EXAMPLE",
        f"MAIL FROM:<{SENDER.upper()}> SIZE={len(RAW)}",
        f"RCPT TO:<{RCPT.upper()}>",
        "DATA",
        "QUIT",
    ]


def test_connections_count_only_clients(plain_smtp: SMTPTestServer) -> None:
    assert plain_smtp.connections == 0
    send_raw(plain_smtp)
    send_raw(plain_smtp)
    assert plain_smtp.connections == 2
    plain_smtp.clear()
    assert (plain_smtp.connections, plain_smtp.messages, plain_smtp.commands) == (0, [], [])


def test_ehlo_advertisement_of_plain_server(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        assert features(client) == {"size", "8bitmime", "smtputf8", "help"}
        assert client.esmtp_features["size"] == "33554432"
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls()
        code, _ = client.docmd("AUTH", "PLAIN AHVzZXIAcGFzcw==")
        assert code == 502


def test_starttls_command_without_tls_is_454(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        client.ehlo()
        assert client.docmd("STARTTLS")[0] == 454


def test_ehlo_toggles(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(pipelining=True, smtputf8=False, size=None, hostname="mx.test")
    with connect(server) as client:
        assert features(client) == {"8bitmime", "pipelining", "help"}
        assert client.ehlo_resp is not None
        assert client.ehlo_resp.startswith(b"mx.test")


# -- TLS and AUTH --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "initial_response"),
    [("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False)],
)
def test_starttls_then_auth(
    smtp_server: SMTPServerFactory,
    client_ssl_context: ssl.SSLContext,
    mechanism: str,
    initial_response: bool,
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    with connect(server) as client:
        assert "starttls" in features(client)
        client.starttls(context=client_ssl_context)
        assert "starttls" not in features(client)
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        client.user, client.password = USER, PASSWORD
        method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, method, initial_response_ok=initial_response)
        assert code == 235
        client.sendmail(SENDER, [RCPT], RAW)

    [received] = server.wait_for_messages(1)
    assert received.tls is True
    assert received.auth_user == USER
    verbs = [c.split()[0].upper() for c in server.commands]
    assert verbs.index("STARTTLS") < verbs.index("AUTH")


def test_implicit_tls(smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext) -> None:
    # auth_require_tls is satisfied by implicit TLS.
    server = smtp_server(tls="ssl", auth=True, auth_require_tls=True)
    with smtplib.SMTP_SSL(server.host, server.port, context=client_ssl_context) as client:
        assert "starttls" not in features(client)
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RCPT], RAW)
    [received] = server.wait_for_messages(1)
    assert (received.tls, received.auth_user) == (True, USER)


def test_implicit_tls_with_ca_file(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl")
    context = ssl.create_default_context(cafile=str(certs.ca_pem_path()))
    with smtplib.SMTP_SSL("localhost", server.port, context=context) as client:
        assert client.noop()[0] == 250


def test_untrusted_client_fails_handshake(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl")
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(server.host, server.port, context=ssl.create_default_context())


def test_wrong_password_is_535(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login(USER, "wrong")
        assert excinfo.value.smtp_code == 535


def test_custom_users_and_single_mechanism(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, users={"bob": "pw"}, auth_mechanisms=["login"])
    with connect(server) as client:
        assert features(client) >= {"auth"}
        assert client.esmtp_features["auth"].strip() == "LOGIN"
        client.login("bob", "pw")
        client.sendmail(SENDER, [RCPT], RAW)
    assert server.wait_for_messages(1)[0].auth_user == "bob"


def test_auth_require_tls_refuses_auth_before_starttls(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    with connect(server) as client:
        assert "auth" not in features(client)
        code, _ = client.docmd("AUTH", "PLAIN AHVzZXJAZXhhbXBsZS5jb20AczNjcmV0LXBhc3M=")
        assert code == 538
        client.starttls(context=client_ssl_context)
        client.login(USER, PASSWORD)


def test_auth_allowed_in_plaintext_by_default(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True)
    with connect(server) as client:
        assert {"auth", "starttls"} <= features(client)
        client.login(USER, PASSWORD)


def test_require_auth(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, require_auth=True)
    with connect(server) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(SENDER, [RCPT], RAW)
        assert excinfo.value.smtp_code == 530
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RCPT], RAW)
    server.wait_for_messages(1)


def test_require_starttls(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls="starttls", require_starttls=True)
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<a@example.com>")[0] == 530
        client.starttls(context=client_ssl_context)
        client.sendmail(SENDER, [RCPT], RAW)
    server.wait_for_messages(1)


# -- CRAM-MD5 and XOAUTH2 ------------------------------------------------------------------------


def test_all_mechanisms_and_extensions_in_ehlo_order(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(
        auth=True,
        auth_mechanisms=["xoauth2", "CRAM-MD5", "PLAIN", "LOGIN"],
        pipelining=True,
        dsn=True,
    )
    with connect(server) as client:
        code, reply = client.ehlo()
    assert code == 250
    assert reply.decode().splitlines() == [
        "localhost",
        "SIZE 33554432",
        "8BITMIME",
        "SMTPUTF8",
        "AUTH CRAM-MD5 LOGIN PLAIN XOAUTH2",
        "PIPELINING",
        "DSN",
        "HELP",
    ]


def test_cram_md5_by_hand(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5"], hostname="mx.test")
    with connect(server) as client:
        assert features(client) >= {"auth"}
        assert client.esmtp_features["auth"].strip() == "CRAM-MD5"
        code, blob = client.docmd("AUTH", "CRAM-MD5")
        assert code == 334
        challenge = base64.b64decode(blob, validate=True)
        assert re.fullmatch(rb"<\d+\.\d+@mx\.test>", challenge)
        digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
        answer = base64.b64encode(f"{USER} {digest}".encode()).decode()
        assert client.docmd(answer) == (235, b"2.7.0 Authentication successful")
        client.sendmail(SENDER, [RCPT], RAW)
    [received] = server.wait_for_messages(1)
    assert received.auth_user == USER
    assert server.commands[1:3] == ["AUTH CRAM-MD5", answer]


def test_cram_md5_challenges_differ(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5"])
    challenges = set()
    with connect(server) as client:
        client.ehlo()
        for _ in range(3):
            code, blob = client.docmd("AUTH", "CRAM-MD5")
            assert code == 334
            challenges.add(blob)
            assert client.docmd("*")[0] == 501  # client cancels
    assert len(challenges) == 3


def test_cram_md5_with_smtplib_login(smtp_server: SMTPServerFactory) -> None:
    # smtplib prefers CRAM-MD5 when offered.
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5", "PLAIN", "LOGIN"])
    with connect(server) as client:
        client.login(USER, PASSWORD)
        client.sendmail(SENDER, [RCPT], RAW)
    assert server.wait_for_messages(1)[0].auth_user == USER
    assert "AUTH CRAM-MD5" in server.commands


@pytest.mark.parametrize(("user", "password"), [(USER, "wrong"), ("nobody@example.com", PASSWORD)])
def test_cram_md5_refused(smtp_server: SMTPServerFactory, user: str, password: str) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5"])
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login(user, password)
        assert excinfo.value.smtp_code == 535
        assert excinfo.value.smtp_error == b"5.7.8 Authentication credentials invalid"


@pytest.mark.parametrize(
    ("answer", "reply"),
    [
        ("not base64!", (501, b"5.5.2 Can't decode base64")),
        (
            base64.b64encode(b"no-space-at-all").decode(),
            (501, b"5.5.2 Malformed CRAM-MD5 response"),
        ),
        # The digest must be lowercase hex, as RFC 2195 says.
        (base64.b64encode(f"{USER} {'A' * 32}".encode()).decode(), (535, None)),
    ],
)
def test_cram_md5_malformed_answers(
    smtp_server: SMTPServerFactory, answer: str, reply: tuple[int, bytes | None]
) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5"])
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 334
        code, text = client.docmd(answer)
        assert code == reply[0]
        assert reply[1] is None or text == reply[1]
        # An initial response is not allowed with CRAM-MD5 (RFC 4954 4).
        assert client.docmd("AUTH", "CRAM-MD5 " + answer)[0] == 501


def test_cram_md5_digest_is_checked_in_lowercase(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5"])
    with connect(server) as client:
        client.ehlo()
        _, blob = client.docmd("AUTH", "CRAM-MD5")
        challenge = base64.b64decode(blob)
        digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest().upper()
        assert client.docmd(base64.b64encode(f"{USER} {digest}".encode()).decode())[0] == 535


def test_xoauth2_over_starttls(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(
        tls="starttls", auth=True, auth_require_tls=True, auth_mechanisms=["XOAUTH2"]
    )
    with connect(server) as client:
        client.ehlo()
        client.starttls(context=client_ssl_context)
        assert features(client) >= {"auth"}
        assert client.esmtp_features["auth"].strip() == "XOAUTH2"
        code, text = client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, TOKEN))
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        client.sendmail(SENDER, [RCPT], RAW)
    [received] = server.wait_for_messages(1)
    assert (received.tls, received.auth_user) == (True, USER)


def test_xoauth2_refused_token_then_fresh_one(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["XOAUTH2"])
    with connect(server) as client:
        client.ehlo()
        code, blob = client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, "expired-token"))
        assert code == 334
        assert json.loads(base64.b64decode(blob, validate=True)) == {
            "status": "401",
            "schemes": "bearer",
            "scope": "https://mail.google.com/",
        }
        assert client.docmd("") == (535, b"5.7.8 Username and Password not accepted")
        # The session stays usable: a fresh token logs in.
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, TOKEN))[0] == 235
    assert server.commands[2] == ""  # the client's empty answer to the error challenge


def test_xoauth2_cancel_after_refusal(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["XOAUTH2"])
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, "bad"))[0] == 334
        assert client.docmd("*") == (501, b"5.7.0 Auth aborted")


def test_xoauth2_without_initial_response(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["XOAUTH2"])
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", "XOAUTH2") == (334, b"")
        assert client.docmd(xoauth2(USER, TOKEN))[0] == 235


def test_xoauth2_custom_tokens_read_at_each_auth(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["XOAUTH2"], oauth_tokens={"bob": {"t1"}})
    assert server.oauth_tokens == {"bob": {"t1"}}
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, TOKEN))[0] == 334
        assert client.docmd("")[0] == 535
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2("bob", "t1"))[0] == 235
        client.sendmail(SENDER, [RCPT], RAW)
    assert server.wait_for_messages(1)[0].auth_user == "bob"
    server.oauth_tokens["bob"].discard("t1")  # revoked
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2("bob", "t1"))[0] == 334
        assert client.docmd("")[0] == 535


@pytest.mark.parametrize(
    "blob",
    [
        b"user=user@example.com\x01auth=Bearer t\x01",  # one final ^A short
        b"auth=Bearer t\x01\x01",  # no user
        b"user=user@example.com\x01auth=Basic dXNlcjpwYXNz\x01\x01",  # not a bearer token
        b"user=user@example.com\x01auth=Bearer \x01\x01",  # empty token
        b"",
    ],
)
def test_xoauth2_malformed(smtp_server: SMTPServerFactory, blob: bytes) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["XOAUTH2"])
    with connect(server) as client:
        client.ehlo()
        arg = base64.b64encode(blob).decode() or "="  # "=" is the empty initial response
        assert client.docmd("AUTH", "XOAUTH2 " + arg) == (
            501,
            b"5.5.2 Malformed XOAUTH2 response",
        )
        assert client.docmd("AUTH", "XOAUTH2 not-base64!") == (
            501,
            b"5.5.2 Can't decode base64",
        )


def test_xoauth2_token_length_is_bounded_by_the_command_line(
    smtp_server: SMTPServerFactory,
) -> None:
    # aiosmtpd limits every command line to 512 characters, AUTH included.
    fits, too_long = "t" * 300, "t" * 400
    server = smtp_server(
        auth=True, auth_mechanisms=["XOAUTH2"], oauth_tokens={USER: {fits, too_long}}
    )
    with connect(server) as client:
        client.ehlo()
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, too_long)) == (
            500,
            b"Command line too long",
        )
        assert client.docmd("AUTH", "XOAUTH2 " + xoauth2(USER, fits))[0] == 235


# -- DSN ------------------------------------------------------------------------------------------


def test_dsn_parameters_are_accepted_and_recorded(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(dsn=True)
    with connect(server) as client:
        assert "dsn" in features(client)
        assert client.docmd("MAIL", f"FROM:<{SENDER}> ret=hdrs SIZE=10 ENVID=Q+2B1+3Dx")[0] == 250
        assert client.docmd("RCPT", "TO:<a@example.com> NOTIFY=failure,DELAY")[0] == 250
        assert client.docmd("RCPT", "TO:<b@example.com>")[0] == 250
        assert client.docmd("RCPT", "TO:<c@example.com> orcpt=rfc822;C+2B@example.com")[0] == 250
        assert client.docmd("RCPT", "TO:<d@example.com> NOTIFY=NEVER ORCPT=rfc822;d")[0] == 250
        assert client.data(RAW)[0] == 250
        # Another transaction starts with empty records.
        client.sendmail(SENDER, [RCPT], RAW, rcpt_options=["NOTIFY=SUCCESS"])
    first, second = server.wait_for_messages(2)
    # Keywords upper-cased, DSN values as sent (xtext is case-sensitive), order kept.
    assert first.mail_options == ["RET=hdrs", "SIZE=10", "ENVID=Q+2B1+3Dx"]
    assert first.rcpt_tos == ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]
    assert first.rcpt_options == [
        ["NOTIFY=failure,DELAY"],
        [],
        ["ORCPT=rfc822;C+2B@example.com"],
        ["NOTIFY=NEVER", "ORCPT=rfc822;d"],
    ]
    assert second.mail_options == [f"SIZE={len(RAW)}"]
    assert second.rcpt_options == [["NOTIFY=SUCCESS"]]


def test_dsn_refused_recipient_records_nothing(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(dsn=True)
    server.faults.refuse_recipients = {"no@example.com": (550, "5.1.1 No such user")}
    with connect(server) as client:
        refused = client.sendmail(
            SENDER, ["no@example.com", RCPT], RAW, rcpt_options=["NOTIFY=DELAY"]
        )
    assert list(refused) == ["no@example.com"]
    [received] = server.wait_for_messages(1)
    assert (received.rcpt_tos, received.rcpt_options) == ([RCPT], [["NOTIFY=DELAY"]])


def test_dsn_allows_longer_lines(smtp_server: SMTPServerFactory) -> None:
    # RFC 3461: DSN may lengthen RCPT lines by 500 characters (aiosmtpd's limit is 512).
    server = smtp_server(dsn=True)
    orcpt = "ORCPT=rfc822;" + "x" * 700 + "@example.com"
    with connect(server) as client:
        client.sendmail(SENDER, [RCPT], RAW, rcpt_options=["NOTIFY=FAILURE", orcpt])
    assert server.wait_for_messages(1)[0].rcpt_options == [["NOTIFY=FAILURE", orcpt]]


@pytest.mark.parametrize(
    ("verb", "arg", "reply"),
    [
        ("MAIL", "RET=ALL", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL", "RET", "501 5.5.4 Bad RET parameter syntax"),
        ("MAIL", "RET=FULL RET=HDRS", "501 5.5.4 Bad RET parameter (repeated)"),
        ("MAIL", "ENVID=a=b", "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL", "ENVID=a+2b", "501 5.5.4 Bad ENVID parameter syntax"),  # hex is upper case
        ("MAIL", "ENVID=a+", "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL", "ENVID=caf\u00e9", "501 5.5.4 Bad ENVID parameter syntax"),
        ("MAIL", "BY=1000", "555 MAIL FROM parameters not recognized or not implemented"),
        ("RCPT", "NOTIFY=NEVER,FAILURE", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT", "NOTIFY=SOMETIMES", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT", "NOTIFY=FAILURE,", "501 5.5.4 Bad NOTIFY parameter syntax"),
        ("RCPT", "NOTIFY=DELAY NOTIFY=DELAY", "501 5.5.4 Bad NOTIFY parameter (repeated)"),
        ("RCPT", "ORCPT=a@example.com", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT", "ORCPT=rfc822;", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT", "ORCPT=rfc822;a=b@example.com", "501 5.5.4 Bad ORCPT parameter syntax"),
        ("RCPT", "FOO=1", "555 RCPT TO parameters not recognized or not implemented"),
    ],
)
def test_dsn_malformed_parameters(
    smtp_server: SMTPServerFactory, verb: str, arg: str, reply: str
) -> None:
    server = smtp_server(dsn=True)
    with connect(server) as client:
        client.command_encoding = "utf-8"  # lets the non-ASCII ENVID through
        client.ehlo()
        if verb == "RCPT":
            assert client.docmd("MAIL", f"FROM:<{SENDER}>")[0] == 250
            code, text = client.docmd("RCPT", f"TO:<{RCPT}> {arg}")
        else:
            code, text = client.docmd("MAIL", f"FROM:<{SENDER}> {arg}")
        assert f"{code} {text.decode()}" == reply
        # Nothing was accepted: the transaction can still start (or take a recipient).
        if verb == "RCPT":
            assert client.docmd("RCPT", f"TO:<{RCPT}>")[0] == 250
        else:
            assert client.docmd("MAIL", f"FROM:<{SENDER}>")[0] == 250


def test_dsn_checks_come_after_session_checks(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(dsn=True, auth=True, require_auth=True)
    with connect(server) as client:
        assert client.docmd("MAIL", f"FROM:<{SENDER}> RET=ALL")[0] == 503  # no EHLO yet
        client.ehlo()
        assert client.docmd("RCPT", f"TO:<{RCPT}> NOTIFY=BAD")[0] == 530  # not logged in
        assert client.docmd("MAIL", f"FROM:<{SENDER}> RET=ALL")[0] == 530
        client.login(USER, PASSWORD)
        assert client.docmd("RCPT", f"TO:<{RCPT}> NOTIFY=BAD")[0] == 503  # no MAIL yet


def test_without_dsn_parameters_are_refused(plain_smtp: SMTPTestServer) -> None:
    with connect(plain_smtp) as client:
        assert "dsn" not in features(client)
        assert client.docmd("MAIL", f"FROM:<{SENDER}> RET=HDRS")[0] == 555
        assert client.docmd("MAIL", f"FROM:<{SENDER}>")[0] == 250
        assert client.docmd("RCPT", f"TO:<{RCPT}> NOTIFY=FAILURE")[0] == 555


# -- TLS versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_tls_version_is_recorded(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, tls: str
) -> None:
    uncapped = smtp_server(tls="starttls" if tls == "starttls" else "ssl")
    capped = smtp_server(
        tls="starttls" if tls == "starttls" else "ssl", tls_max_version=ssl.TLSVersion.TLSv1_2
    )
    for server in (uncapped, capped):
        if tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                server.host, server.port, context=client_ssl_context
            )
        else:
            client = connect(server)
            client.starttls(context=client_ssl_context)
        with client:
            client.sendmail(SENDER, [RCPT], RAW)
    assert uncapped.wait_for_messages(1)[0].tls_version == "TLSv1.3"
    assert capped.wait_for_messages(1)[0].tls_version == "TLSv1.2"


def test_tls_max_version_refuses_newer_only_clients(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    client_ssl_context.minimum_version = ssl.TLSVersion.TLSv1_3
    starttls = smtp_server(tls="starttls", tls_max_version=ssl.TLSVersion.TLSv1_2)
    with connect(starttls) as client:
        client.ehlo()
        with pytest.raises(ssl.SSLError):
            client.starttls(context=client_ssl_context)
    wait_until(lambda: starttls.tls_handshake_failures == 1)
    assert starttls.commands[-1] == "STARTTLS"

    implicit = smtp_server(tls="ssl", tls_max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        smtplib.SMTP_SSL(implicit.host, implicit.port, context=client_ssl_context)
    wait_until(lambda: implicit.tls_handshake_failures == 1)
    assert implicit.messages == starttls.messages == []


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["none", "ssl"])
def test_greeting_fault(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, tls: str
) -> None:
    server = smtp_server(tls="ssl" if tls == "ssl" else "none", faults=Faults(greeting_code=421))

    def open_client() -> smtplib.SMTP:
        if tls == "ssl":
            return smtplib.SMTP_SSL(server.host, server.port, context=client_ssl_context)
        return connect(server)

    with pytest.raises(smtplib.SMTPConnectError) as excinfo:
        open_client()
    assert excinfo.value.smtp_code == 421
    assert excinfo.value.smtp_error == b"Service not available"
    server.faults.greeting_code = None
    with open_client() as client:
        assert client.noop()[0] == 250
    assert server.connections == 2


def test_transient_failures_then_success(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.transient_failures = 2
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            send_raw(plain_smtp)
        assert excinfo.value.smtp_code == 451
        assert excinfo.value.smtp_error == b"4.3.0 Temporary failure"
    send_raw(plain_smtp)

    assert len(plain_smtp.wait_for_messages(1)) == 1
    assert len(plain_smtp.rejected) == 2
    assert plain_smtp.faults.transient_failures == 0
    assert [c.upper() for c in plain_smtp.commands].count("DATA") == 3


def test_permanent_failure(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.permanent_failure = True
    for _ in range(2):
        with pytest.raises(smtplib.SMTPDataError) as excinfo:
            send_raw(plain_smtp)
        assert (excinfo.value.smtp_code, excinfo.value.smtp_error) == (
            554,
            b"5.7.1 Message rejected",
        )
    assert plain_smtp.messages == []
    assert len(plain_smtp.rejected) == 2
    plain_smtp.faults.permanent_code = 550
    with pytest.raises(smtplib.SMTPDataError) as excinfo:
        send_raw(plain_smtp)
    assert excinfo.value.smtp_code == 550


def test_mail_from_transient_451_keeps_session(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.mail_from_transient = 1
    with connect(plain_smtp) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(SENDER, [RCPT], RAW)
        assert excinfo.value.smtp_code == 451
        client.sendmail(SENDER, [RCPT], RAW)
    plain_smtp.wait_for_messages(1)


def test_mail_from_transient_421_closes(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults = Faults(mail_from_transient=1, mail_from_transient_code=421)
    with connect(plain_smtp) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.sendmail(SENDER, [RCPT], RAW)
        assert excinfo.value.smtp_code == 421
        # smtplib itself closes the connection after a 421.
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    send_raw(plain_smtp)
    plain_smtp.wait_for_messages(1)


def test_refused_recipients(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.refuse_recipients = {
        "nobody@example.com": (550, "5.1.1 No such user"),
        "Later@Example.com": (450, "4.2.1 Try later"),
    }
    with connect(plain_smtp) as client:
        refused = client.sendmail(SENDER, [RCPT, "nobody@example.com", "later@example.com"], RAW)
        assert refused == {
            "nobody@example.com": (550, b"5.1.1 No such user"),
            "later@example.com": (450, b"4.2.1 Try later"),
        }
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, ["nobody@example.com"], RAW)
    [received] = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == [RCPT]


def test_drop_in_data(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.drop_in_data = 1
    with connect(plain_smtp) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, [RCPT], RAW)
    assert plain_smtp.faults.drop_in_data == 0
    assert plain_smtp.messages == plain_smtp.rejected == []
    send_raw(plain_smtp)
    plain_smtp.wait_for_messages(1)


def test_drop_after_data(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.drop_after_data = 1
    with connect(plain_smtp) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, [RCPT], RAW)
    assert plain_smtp.faults.drop_after_data == 0
    [kept] = plain_smtp.messages  # the relay has it, though the client never heard so
    assert kept.rcpt_tos == [RCPT]
    send_raw(plain_smtp)
    assert len(plain_smtp.wait_for_messages(2)) == 2


def test_drop_after_messages(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.drop_after_messages = 2
    with connect(plain_smtp) as client:
        client.sendmail(SENDER, [RCPT], RAW)
        client.sendmail(SENDER, [RCPT], RAW)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail(SENDER, [RCPT], RAW)
    # A fresh connection gets its own budget.
    send_raw(plain_smtp)
    assert len(plain_smtp.wait_for_messages(3)) == 3
    assert plain_smtp.connections == 2


def test_delay_reply_lets_client_time_out(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.delay_reply_seconds = 30
    client = smtplib.SMTP(plain_smtp.host, plain_smtp.port, timeout=0.2)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.sendmail(SENDER, [RCPT], RAW)
    finally:
        client.close()


# -- helpers and lifecycle ------------------------------------------------------------------------


def test_wait_for_messages_reports_what_arrived(plain_smtp: SMTPTestServer) -> None:
    plain_smtp.faults.permanent_failure = True
    with pytest.raises(smtplib.SMTPDataError):
        send_raw(plain_smtp)
    with pytest.raises(AssertionError, match=r"(?s)got 0.*rejected: <from='sender@example"):
        plain_smtp.wait_for_messages(1, timeout=0.05)


def test_closed_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=5).close()


def test_stop_aborts_open_connections() -> None:
    server = SMTPTestServer(tls="starttls").start()
    plain = connect(server)
    tls = connect(server)
    tls.starttls(context=certs.client_ssl_context())
    idle = socket.create_connection(server.address)  # never speaks
    try:
        server.stop()
        server.stop()  # idempotent
        for client in (plain, tls):
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
    finally:
        for client in (plain, tls):
            client.close()
        idle.close()


def test_restart_after_stop() -> None:
    server = SMTPTestServer()
    with server:
        send_raw(server)
    with server:
        send_raw(server)
    assert len(server.messages) == 2


def test_stop_during_pending_tls_handshake() -> None:
    """A client that connects to an implicit-TLS server and never sends its ClientHello does
    not keep ``stop()`` from stopping: the pending connection is closed and the port no
    longer accepts connections."""
    server = SMTPTestServer(tls="ssl").start()
    address = server.address
    with socket.create_connection(address) as pending:  # no ClientHello ever
        server.stop()
        pending.settimeout(10)
        # Closed by the server with nothing sent (a reset is as good as an empty read).
        with contextlib.suppress(ConnectionResetError):
            assert pending.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="tls"):
        SMTPTestServer(tls="tls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auth_mechanisms"):
        SMTPTestServer(auth=True, auth_mechanisms=["DIGEST-MD5"])
    with pytest.raises(ValueError, match="auth_mechanisms"):
        SMTPTestServer(auth=True, auth_mechanisms=[])
    with pytest.raises(ValueError, match="require_starttls"):
        SMTPTestServer(require_starttls=True)
    with pytest.raises(ValueError, match="tls_max_version needs"):
        SMTPTestServer(tls_max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ValueError, match="tls_max_version must be"):
        SMTPTestServer(tls="ssl", tls_max_version="TLSv1.2")  # type: ignore[arg-type]


async def test_usable_from_asyncio_tests() -> None:
    # The server has its own loop, so it neither needs nor blocks the test's loop.
    with SMTPTestServer() as server:
        await asyncio.to_thread(send_raw, server)
        [received] = await asyncio.to_thread(server.wait_for_messages, 1)
    assert received.message["Subject"] == "Hello"
