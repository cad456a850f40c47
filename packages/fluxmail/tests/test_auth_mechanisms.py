"""CRAM-MD5, XOAUTH2, DSN parameters and a minimum TLS version, end to end against the testkit
server (which checks each exchange the way real relays do)."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import SMTPTestServer
from fluxmail import FluxMail, FluxMailException

from .conftest import PASSWORD, USER

TOKEN = "ya29.valid-access-token"
TO = "to@example.com"


def make_mailer(
    server: SMTPTestServer, ctx: ssl.SSLContext | None = None, **kwargs: Any
) -> FluxMail:
    """A mailer for ``server``: by name ("localhost", which the certificate covers) when TLS
    is asked for, else by its loopback address (where FluxMail allows AUTH without TLS)."""
    tls = kwargs.get("use_tls") or kwargs.get("use_ssl")
    kwargs.setdefault("sender", "from@example.com")
    host = "localhost" if tls else server.host
    return FluxMail("smtp", host, port=server.port, ssl_context=ctx, **kwargs)


async def send(mailer: FluxMail, use_async: bool, **create: Any) -> None:
    mailer.create("Subject", create.pop("recipients", [TO]), "Body", **create)
    if use_async:
        await mailer.send_async()
    else:
        mailer.send()


async def send_fails(mailer: FluxMail, use_async: bool, **create: Any) -> FluxMailException:
    """The precise cause of a failed send (``send_failed`` chains it)."""
    with pytest.raises(FluxMailException) as info:
        await send(mailer, use_async, **create)
    assert info.value.code == "send_failed"
    cause = info.value.__cause__
    assert isinstance(cause, FluxMailException)
    return cause


def auth_commands(server: SMTPTestServer) -> list[str]:
    return [c for c in server.commands if c.upper().startswith("AUTH")]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """For server counters updated after the client already saw the outcome."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class TokenSource:
    """An ``oauth2_token`` callable handing out ``tokens`` in turn (the last one repeats)."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = tokens
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.tokens[min(self.calls, len(self.tokens)) - 1]


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def use_async(request: pytest.FixtureRequest) -> bool:
    """Run the test with ``send()`` and with ``send_async()`` (two transports)."""
    return bool(request.param)


# -- CRAM-MD5 -------------------------------------------------------------------------------------


async def test_cram_md5_on_loopback_plaintext(
    smtp_server: SMTPServerFactory, use_async: bool
) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["PLAIN", "LOGIN", "CRAM-MD5"])
    mailer = make_mailer(server, username=USER, password=PASSWORD)
    await send(mailer, use_async)
    (received,) = server.wait_for_messages(1)
    assert (received.auth_user, received.tls) == (USER, False)
    # Without TLS, the mechanism that never sends the password wins; PLAIN/LOGIN are not tried.
    assert auth_commands(server) == ["AUTH CRAM-MD5"]
    # The answer to the challenge is the user and an HMAC, never the password.
    answer = server.commands[server.commands.index("AUTH CRAM-MD5") + 1]
    assert re.fullmatch(rf"{re.escape(USER)} [0-9a-f]{{32}}", base64.b64decode(answer).decode())


@pytest.mark.parametrize(
    ("tls", "offered", "expected"),
    [
        ("starttls", ["CRAM-MD5", "LOGIN", "PLAIN"], "PLAIN"),
        ("starttls", ["CRAM-MD5", "LOGIN"], "LOGIN"),
        ("starttls", ["CRAM-MD5"], "CRAM-MD5"),
        ("none", ["CRAM-MD5", "LOGIN", "PLAIN"], "CRAM-MD5"),
        ("none", ["LOGIN", "PLAIN"], "PLAIN"),
        ("none", ["LOGIN"], "LOGIN"),
    ],
)
def test_mechanism_preference(
    smtp_server: SMTPServerFactory,
    client_ssl_context: ssl.SSLContext,
    tls: str,
    offered: list[str],
    expected: str,
) -> None:
    server = smtp_server(tls="starttls" if tls == "starttls" else "none", auth=True,
                         auth_mechanisms=offered)  # fmt: skip
    mailer = make_mailer(
        server, client_ssl_context, use_tls=tls == "starttls", username=USER, password=PASSWORD
    )
    assert mailer.test_connection()["auth"] == expected
    mailer.create("Subject", [TO], "Body").send()
    assert server.wait_for_messages(1)[0].auth_user == USER
    verbs = {c.split()[1].upper() for c in auth_commands(server)}
    assert verbs == {expected}


async def test_cram_md5_wrong_password(
    smtp_server: SMTPServerFactory, use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = smtp_server(auth=True, auth_mechanisms=["CRAM-MD5", "PLAIN"])
    wrong = "Wr0ng-Pa55word!"
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    mailer = make_mailer(
        server, username=USER, password=wrong, max_retries=2, retry_delay=0, log_level="DEBUG"
    )
    cause = await send_fails(mailer, use_async)
    assert cause.code == "auth_failed"
    assert "535" in str(cause)
    assert server.connections == 1  # not worth retrying
    assert auth_commands(server) == ["AUTH CRAM-MD5"]  # no fallback to a mechanism that leaks
    assert not any(c.upper().startswith("MAIL") for c in server.commands)
    assert server.messages == []
    for text in (str(cause), repr(cause), caplog.text):
        assert wrong not in text


# -- XOAUTH2 --------------------------------------------------------------------------------------


async def test_xoauth2_over_starttls_with_static_token(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, use_async: bool
) -> None:
    server = smtp_server(
        tls="starttls",
        auth=True,
        auth_require_tls=True,
        auth_mechanisms=["PLAIN", "LOGIN", "XOAUTH2"],
        oauth_tokens={USER: {TOKEN}},
    )
    mailer = make_mailer(
        server, client_ssl_context, use_tls=True, username=USER, oauth2_token=TOKEN, sender=None
    )
    await send(mailer, use_async)
    (received,) = server.wait_for_messages(1)
    assert (received.auth_user, received.tls) == (USER, True)
    assert received.mail_from == USER  # the account is the default sender
    [auth] = auth_commands(server)
    assert auth.startswith("AUTH XOAUTH2 ")  # a token given: XOAUTH2 even though PLAIN is offered
    assert server.commands.index("STARTTLS") < server.commands.index(auth)


async def test_xoauth2_expired_token_is_refreshed_once(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, use_async: bool
) -> None:
    server = smtp_server(
        tls="starttls", auth=True, auth_mechanisms=["XOAUTH2"], oauth_tokens={USER: {TOKEN}}
    )
    tokens = TokenSource("expired-token", TOKEN)
    mailer = make_mailer(
        server, client_ssl_context, use_tls=True, username=USER, oauth2_token=tokens
    )
    await send(mailer, use_async)
    assert server.wait_for_messages(1)[0].auth_user == USER
    assert tokens.calls == 2
    assert server.connections == 1  # the fresh token went over the same session
    first, answer, second = server.commands[3:6]
    assert first.startswith("AUTH XOAUTH2 ")
    assert answer == ""  # the empty reply to the server's JSON error challenge
    assert second.startswith("AUTH XOAUTH2 ")
    assert first != second


async def test_xoauth2_refused_twice_is_auth_failed(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, use_async: bool
) -> None:
    server = smtp_server(
        tls="starttls", auth=True, auth_mechanisms=["XOAUTH2"], oauth_tokens={USER: {TOKEN}}
    )
    tokens = TokenSource("bad-1", "bad-2", "bad-3")
    mailer = make_mailer(
        server, client_ssl_context, use_tls=True, username=USER, oauth2_token=tokens,
        max_retries=2, retry_delay=0,
    )  # fmt: skip
    cause = await send_fails(mailer, use_async)
    assert cause.code == "auth_failed"
    assert tokens.calls == 2
    assert server.connections == 1
    assert len(auth_commands(server)) == 2
    assert server.messages == []
    assert not any(c.upper().startswith("MAIL") for c in server.commands)


async def test_xoauth2_not_offered_is_auth_unsupported(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, use_async: bool
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_mechanisms=["PLAIN", "LOGIN"])
    tokens = TokenSource(TOKEN)
    mailer = make_mailer(
        server, client_ssl_context, use_tls=True, username=USER, oauth2_token=tokens
    )
    cause = await send_fails(mailer, use_async)
    assert cause.code == "auth_unsupported"
    assert "XOAUTH2" in str(cause)
    assert tokens.calls == 0  # never fetched a token it could not use
    assert auth_commands(server) == []  # and never fell back to a password mechanism
    assert server.messages == []


async def test_tokens_never_logged_nor_in_errors(
    smtp_server: SMTPServerFactory,
    client_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    use_async: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxmail")
    good = "ya29.secret-good-token"
    server = smtp_server(
        tls="starttls", auth=True, auth_mechanisms=["XOAUTH2"], oauth_tokens={USER: {good}}
    )
    kwargs: dict[str, Any] = {"use_tls": True, "username": USER, "log_level": "DEBUG"}
    ok = make_mailer(server, client_ssl_context, oauth2_token=TokenSource("ya29.stale", good),
                     **kwargs)  # fmt: skip
    await send(ok, use_async)
    bad = make_mailer(server, client_ssl_context, oauth2_token=TokenSource("ya29.revoked"),
                      **kwargs)  # fmt: skip
    cause = await send_fails(bad, use_async)
    assert cause.code == "auth_failed"

    assert "EHLO" in caplog.text  # the conversation really was logged...
    assert "redacted" in caplog.text  # ...with the AUTH lines hidden
    # Neither the tokens nor the base64 lines that carry them.
    secrets = ["ya29.stale", good, "ya29.revoked"]
    secrets += [c.split()[-1] for c in auth_commands(server)]
    assert len(secrets) == 3 + 4
    texts = [caplog.text, str(cause), repr(cause), repr(ok), repr(bad)]
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- DSN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True])
async def test_dsn_parameters_when_offered(
    smtp_server: SMTPServerFactory, use_async: bool, pipelining: bool
) -> None:
    server = smtp_server(dsn=True, pipelining=pipelining)
    mailer = make_mailer(server)
    await send(
        mailer, use_async, recipients=[TO, "x+tag@example.com"], bcc=["b=c@example.com"],
        dsn_notify=["failure", "DELAY"], dsn_ret="hdrs", dsn_envid="id+1=2 x",
    )  # fmt: skip
    (received,) = server.wait_for_messages(1)
    assert received.rcpt_tos == [TO, "x+tag@example.com", "b=c@example.com"]
    # The envelope id travels as xtext: "+" → "+2B", "=" → "+3D", space → "+20".
    assert received.mail_options[1:] == ["RET=HDRS", "ENVID=id+2B1+3D2+20x"]
    assert received.mail_options[0].startswith("SIZE=")
    notify = "NOTIFY=FAILURE,DELAY"
    assert received.rcpt_options == [
        [notify, "ORCPT=rfc822;to@example.com"],
        [notify, "ORCPT=rfc822;x+2Btag@example.com"],
        [notify, "ORCPT=rfc822;b+3Dc@example.com"],
    ]


async def test_dsn_ret_and_envid_without_notify(
    smtp_server: SMTPServerFactory, use_async: bool
) -> None:
    server = smtp_server(dsn=True)
    await send(make_mailer(server), use_async, dsn_ret="FULL", dsn_envid="QQ314159")
    (received,) = server.wait_for_messages(1)
    assert received.mail_options[1:] == ["RET=FULL", "ENVID=QQ314159"]
    assert received.rcpt_options == [[]]  # no NOTIFY asked, so no ORCPT either


async def test_dsn_never(smtp_server: SMTPServerFactory, use_async: bool) -> None:
    server = smtp_server(dsn=True)
    await send(make_mailer(server), use_async, dsn_notify=["NEVER"])
    (received,) = server.wait_for_messages(1)
    assert received.rcpt_options == [["NOTIFY=NEVER", "ORCPT=rfc822;to@example.com"]]
    assert len(received.mail_options) == 1  # SIZE only


async def test_no_dsn_parameters_without_the_extension(
    plain_smtp: SMTPTestServer, use_async: bool
) -> None:
    # The testkit server refuses any DSN parameter with 555 unless dsn=True, so the send
    # itself succeeding shows none was sent; the recorded commands confirm it.
    await send(
        make_mailer(plain_smtp), use_async, dsn_notify=["SUCCESS"], dsn_ret="HDRS",
        dsn_envid="abc",
    )  # fmt: skip
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.rcpt_options == [[]]
    assert len(received.mail_options) == 1
    sent = " ".join(plain_smtp.commands).upper()
    for keyword in ("NOTIFY=", "ORCPT=", "RET=", "ENVID="):
        assert keyword not in sent


@pytest.mark.parametrize(
    "dsn",
    [
        {"dsn_notify": ["NEVER", "FAILURE"]},
        {"dsn_notify": ["SOMETIMES"]},
        {"dsn_notify": ["SUCCESS", ""]},
        {"dsn_ret": "ALL"},
        {"dsn_ret": ""},
        {"dsn_envid": ""},
        {"dsn_envid": "x" * 101},
        {"dsn_envid": "caf\u00e9"},
        {"dsn_envid": "a\tb"},
        {"dsn_envid": "abc\r\nRSET"},
    ],
    ids=repr,
)
def test_invalid_dsn_values_fail_at_create(plain_smtp: SMTPTestServer, dsn: dict[str, Any]) -> None:
    mailer = make_mailer(plain_smtp)
    with pytest.raises(FluxMailException) as info:
        mailer.create("Subject", [TO], "Body", **dsn)
    assert info.value.code == "invalid_params"
    assert plain_smtp.connections == 0


def test_dsn_envid_limits_that_are_allowed(smtp_server: SMTPServerFactory) -> None:
    # Printable ASCII includes the space (RFC 3461 allows "graphic and white space" characters;
    # xtext carries it as "+20"); 100 characters is the maximum. Each one is accepted at
    # create() and reaches the server as the xtext of exactly that value.
    server = smtp_server(dsn=True)
    mailer = make_mailer(server)
    allowed = {"a b": "a+20b", "x" * 100: "x" * 100, "!~+=": "!~+2B+3D"}
    for envid in allowed:
        mailer.create("Subject", [TO], "Body", dsn_envid=envid).send()
    received = server.wait_for_messages(len(allowed))
    assert [m.mail_options[1:] for m in received] == [
        [f"ENVID={xtext}"] for xtext in allowed.values()
    ]


@pytest.mark.parametrize(
    "dsn", [{"dsn_envid": 123}, {"dsn_ret": 5}, {"dsn_notify": ["FAILURE", 1]}], ids=repr
)
def test_non_string_dsn_values_fail_at_create(
    plain_smtp: SMTPTestServer, dsn: dict[str, Any]
) -> None:
    with pytest.raises(FluxMailException) as info:
        make_mailer(plain_smtp).create("Subject", [TO], "Body", **dsn)
    assert info.value.code == "invalid_params"


# -- minimum TLS version --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_min_tls_version_refuses_an_older_server(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, mode: str, use_async: bool
) -> None:
    server = smtp_server(
        tls="starttls" if mode == "starttls" else "ssl",
        auth=True,
        tls_max_version=ssl.TLSVersion.TLSv1_2,
    )
    mailer = make_mailer(
        server, client_ssl_context, use_tls=mode == "starttls", use_ssl=mode == "ssl",
        username=USER, password=PASSWORD, min_tls_version="TLSv1.3",
    )  # fmt: skip
    cause = await send_fails(mailer, use_async)
    assert cause.code == "tls_failed"
    wait_until(lambda: server.tls_handshake_failures == 1)
    assert server.messages == server.rejected == []
    assert auth_commands(server) == []  # the password never left
    verbs = [c.split()[0].upper() for c in server.commands]
    assert verbs == ([] if mode == "ssl" else ["EHLO", "STARTTLS"])


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
async def test_min_tls_version_against_a_current_server(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext, mode: str, use_async: bool
) -> None:
    server = smtp_server(tls="starttls" if mode == "starttls" else "ssl")
    mailer = make_mailer(
        server, client_ssl_context, use_tls=mode == "starttls", use_ssl=mode == "ssl",
        min_tls_version="TLSv1.3",
    )  # fmt: skip
    await send(mailer, use_async)
    (received,) = server.wait_for_messages(1)
    assert (received.tls, received.tls_version) == (True, "TLSv1.3")
    assert server.tls_handshake_failures == 0


def test_min_tls_version_below_the_servers_maximum(
    smtp_server: SMTPServerFactory, client_ssl_context: ssl.SSLContext
) -> None:
    server = smtp_server(tls="starttls", tls_max_version=ssl.TLSVersion.TLSv1_2)
    mailer = make_mailer(
        server, client_ssl_context, use_tls=True, min_tls_version=ssl.TLSVersion.TLSv1_2
    )
    mailer.create("Subject", [TO], "Body").send()
    assert server.wait_for_messages(1)[0].tls_version == "TLSv1.2"


@pytest.fixture
def tls_hang_up_port() -> Iterator[tuple[int, list[int]]]:
    """A port whose listener reads the TLS ClientHello and hangs up without an alert, as
    servers and middleboxes do that will not speak TLS with a client. Also yields the list of
    connections accepted so far."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    accepted: list[int] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                accepted.append(1)
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)

    thread = threading.Thread(target=serve, name="tls-hang-up", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(
    "transport",
    [
        "sync",
        "async",
    ],
)
async def test_hang_up_during_the_tls_handshake_is_tls_failed(
    tls_hang_up_port: tuple[int, list[int]], client_ssl_context: ssl.SSLContext, transport: str
) -> None:
    port, accepted = tls_hang_up_port
    mailer = FluxMail(
        "smtp", "localhost", port=port, use_ssl=True, ssl_context=client_ssl_context,
        sender="from@example.com", max_retries=2, retry_delay=0, timeout=5,
    )  # fmt: skip
    cause = await send_fails(mailer, transport == "async")
    assert cause.code == "tls_failed"
    assert len(accepted) == 1  # a TLS failure is not worth retrying


@pytest.mark.parametrize("version", ["SSLv2", "SSLv3", "TLSv2", "TLSv1.4", ""])
def test_invalid_min_tls_version(version: str) -> None:
    with pytest.raises(FluxMailException) as info:
        FluxMail("smtp", "localhost", min_tls_version=version)
    assert info.value.code == "invalid_config"


def test_non_string_min_tls_version() -> None:
    with pytest.raises(FluxMailException) as info:
        FluxMail("smtp", "localhost", min_tls_version=13)  # type: ignore[arg-type]
    assert info.value.code == "invalid_config"
