"""The ``fluxmail`` command line, run as a real process against real SMTP servers on loopback.

Every subprocess gets an explicit environment without any ``FLUXMAIL_*`` variable, so the
developer's own settings cannot leak into a test. Processes run with ``-W error``: a
successful run must leave stderr empty, which also catches sockets the CLI forgets to close.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import fluxmail
from flux_testkit.certs import ca_pem_path
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import cli
from fluxmail.client import FluxMail

USER = "user@example.com"
PASSWORD = "s3cret-pass"
SUCCESS = "Email sent successfully via SMTP.\n"
PYTHON_M_FLUXMAIL = (sys.executable, "-W", "error", "-m", "fluxmail")


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment minus every FLUXMAIL_* variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_")}
    return env | variables


def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    command: Sequence[str] = PYTHON_M_FLUXMAIL,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        env=clean_env() if env is None else env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def message_args(server: SMTPTestServer | None = None, *extra: str) -> list[str]:
    """Flags for a minimal valid message to ``server`` (no body: tests choose one)."""
    where = [] if server is None else ["--host", server.host, "--port", str(server.port)]
    return [
        *where,
        "--subject", "Hello",
        "--recipients", "to@example.com",
        "--sender", "from@example.com",
        *extra,
    ]  # fmt: skip


def assert_password_hidden(result: subprocess.CompletedProcess[str]) -> None:
    assert PASSWORD not in result.stdout
    assert PASSWORD not in result.stderr


def assert_sent(result: subprocess.CompletedProcess[str]) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, "")


# -- sending: every flag arrives where it should ---------------------------------------------


def test_sends_a_plain_message(plain_smtp: SMTPTestServer) -> None:
    result = run(*message_args(plain_smtp, "--body", "Hi there"))
    assert_sent(result)
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["to@example.com"]
    msg = received.message
    assert (msg["From"], msg["To"], msg["Subject"]) == (
        "from@example.com",
        "to@example.com",
        "Hello",
    )
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Hi there\n"
    assert not received.tls


def test_cc_in_headers_and_bcc_only_in_envelope(plain_smtp: SMTPTestServer) -> None:
    result = run(
        *message_args(plain_smtp, "--body", "x"),
        "--recipients", "to2@example.com",
        "--cc", "cc1@example.com", "--cc", "cc2@example.com",
        "--bcc", "hidden1@example.com", "--bcc", "hidden2@example.com",
    )  # fmt: skip
    assert_sent(result)
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.rcpt_tos == [
        "to@example.com",
        "to2@example.com",
        "cc1@example.com",
        "cc2@example.com",
        "hidden1@example.com",
        "hidden2@example.com",
    ]
    assert received.message["To"] == "to@example.com, to2@example.com"
    assert received.message["Cc"] == "cc1@example.com, cc2@example.com"
    assert "Bcc" not in received.message
    assert b"hidden" not in received.data


def test_repeatable_flags_also_take_several_values(plain_smtp: SMTPTestServer) -> None:
    result = run(
        "--host", plain_smtp.host, "--port", str(plain_smtp.port), "--sender", "f@example.com",
        "--subject", "S", "--recipients", "a@example.com", "b@example.com", "--body", "x",
    )  # fmt: skip
    assert_sent(result)
    assert plain_smtp.wait_for_messages(1)[0].rcpt_tos == ["a@example.com", "b@example.com"]


def test_reply_to(plain_smtp: SMTPTestServer) -> None:
    assert_sent(run(*message_args(plain_smtp, "--body", "x", "--reply-to", "help@example.com")))
    assert plain_smtp.wait_for_messages(1)[0].message["Reply-To"] == "help@example.com"


def test_attachments_arrive_as_mime_parts(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes\n", encoding="utf-8")
    blob = tmp_path / "data.bin"
    blob.write_bytes(bytes(range(256)))
    result = run(
        *message_args(plain_smtp, "--body", "see attached"),
        "--attachments", str(notes), "--attachments", str(blob),
    )  # fmt: skip
    assert_sent(result)
    msg = plain_smtp.wait_for_messages(1)[0].message
    assert msg.get_content_type() == "multipart/mixed"
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content() == "see attached\n"
    parts = {part.get_filename(): part for part in msg.iter_attachments()}
    assert set(parts) == {"notes.txt", "data.bin"}
    assert parts["notes.txt"].get_content_type() == "text/plain"
    assert parts["notes.txt"].get_content() == "some notes\n"
    assert parts["data.bin"].get_content_type() == "application/octet-stream"
    assert parts["data.bin"].get_content() == bytes(range(256))


def test_html_flag_sends_text_html(plain_smtp: SMTPTestServer) -> None:
    assert_sent(run(*message_args(plain_smtp, "--body", "<p>Hi <b>there</b></p>", "--html")))
    msg = plain_smtp.wait_for_messages(1)[0].message
    assert msg.get_content_type() == "text/html"
    assert msg.get_content() == "<p>Hi <b>there</b></p>\n"


def test_body_file(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Grüße aus Köln\nline two\n", encoding="utf-8")
    assert_sent(run(*message_args(plain_smtp, "--body-file", str(body))))
    msg = plain_smtp.wait_for_messages(1)[0].message
    assert msg.get_content() == "Grüße aus Köln\nline two\n"


def test_body_file_dash_reads_stdin(plain_smtp: SMTPTestServer) -> None:
    assert_sent(run(*message_args(plain_smtp, "--body-file", "-"), stdin="from a pipe\n"))
    assert plain_smtp.wait_for_messages(1)[0].message.get_content() == "from a pipe\n"


def test_sender_flag_sets_from_and_envelope(plain_smtp: SMTPTestServer) -> None:
    result = run(
        "--host", plain_smtp.host, "--port", str(plain_smtp.port),
        "--subject", "S", "--recipients", "to@example.com", "--body", "x",
        "--sender", "Alice Example <alice@example.com>",
    )  # fmt: skip
    assert_sent(result)
    (received,) = plain_smtp.wait_for_messages(1)
    assert received.mail_from == "alice@example.com"
    assert received.message["From"] == "Alice Example <alice@example.com>"


def test_dry_run_prints_the_message_and_sends_nothing(plain_smtp: SMTPTestServer) -> None:
    result = run(
        *message_args(plain_smtp, "--body", "preview me", "--dry-run"),
        "--bcc", "hidden@example.com", "--username", USER, "--password", PASSWORD,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("Email Preview:\n")
    assert "Subject: Hello\n" in result.stdout
    assert "To: to@example.com\n" in result.stdout
    assert "preview me" in result.stdout
    assert_password_hidden(result)
    assert plain_smtp.connections == 0
    assert plain_smtp.messages == []


def test_version() -> None:
    result = run("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"fluxmail {fluxmail.__version__}\n",
        "",
    )


def test_help_goes_to_stdout_and_exits_0() -> None:
    result = run("--help")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: fluxmail ")
    assert "--body-file" in result.stdout
    assert "fluxmail check" in result.stdout


def test_installed_console_script(plain_smtp: SMTPTestServer) -> None:
    script = shutil.which("fluxmail", path=Path(sys.executable).parent)
    assert script is not None, "the fluxmail console script is not installed in this venv"
    version = run("--version", command=[script])
    assert (version.returncode, version.stdout) == (0, f"fluxmail {fluxmail.__version__}\n")
    assert_sent(run(*message_args(plain_smtp, "--body", "via script"), command=[script]))
    assert plain_smtp.wait_for_messages(1)[0].message.get_content() == "via script\n"


# -- TLS and authentication --------------------------------------------------------------------


def test_starttls_with_auth_trusting_ca_file(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True, require_auth=True)
    result = run(
        "--host", server.host, "--port", str(server.port), "--tls",
        "--ca-file", str(ca_pem_path()), "--username", USER, "--password", PASSWORD,
        "--subject", "Secure", "--recipients", "to@example.com", "--body", "x",
    )  # fmt: skip
    assert_sent(result)
    (received,) = server.wait_for_messages(1)
    assert received.tls
    assert received.auth_user == USER
    assert received.mail_from == USER  # without --sender, the username (an address) sends
    assert server.commands.index("STARTTLS") < next(
        i for i, line in enumerate(server.commands) if line.startswith("AUTH")
    )


def test_implicit_tls_with_ssl(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl", auth=True)
    result = run(
        *message_args(server, "--body", "x", "--ssl", "--ca-file", str(ca_pem_path())),
        "--username", USER, "--password", PASSWORD,
    )  # fmt: skip
    assert_sent(result)
    (received,) = server.wait_for_messages(1)
    assert (received.tls, received.auth_user) == (True, USER)
    assert "STARTTLS" not in server.commands


def test_tls_without_the_ca_file_is_refused(smtp_server: SMTPServerFactory) -> None:
    # The system store does not know the testkit CA, so verification must fail.
    server = smtp_server(tls="ssl", auth=True)
    result = run(
        *message_args(server, "--body", "x", "--ssl"), "--username", USER, "--password", PASSWORD
    )
    assert result.returncode == 2
    assert "(code: send_failed)" in result.stderr
    assert "(code: tls_failed)" in result.stderr
    assert_password_hidden(result)
    assert server.messages == []


def test_wrong_password_is_a_fluxmail_error_that_hides_it(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True, users={USER: "another-pass"})
    result = run(
        *message_args(server, "--body", "x", "--tls", "--ca-file", str(ca_pem_path())),
        "--username", USER, "--password", PASSWORD,
    )  # fmt: skip
    assert result.returncode == 2
    assert "(code: auth_failed)" in result.stderr
    assert_password_hidden(result)


@pytest.mark.parametrize("allow", [False, True])
def test_allow_plaintext_auth(
    allow: bool,
    smtp_server: SMTPServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    isolated_env: None,
) -> None:
    # Loopback relays are exempt from the plaintext-AUTH refusal, and every test server is on
    # loopback; pretend it is remote so the flag matters. In-process for the monkeypatch.
    monkeypatch.setattr("fluxmail.client.is_loopback", lambda host: False)
    server = smtp_server(auth=True)
    flags = ["--allow-plaintext-auth"] if allow else []
    argv = message_args(server, "--body", "x", "--username", USER, "--password", PASSWORD)
    code = cli.main([*argv, *flags])
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    if allow:
        assert (code, out, err) == (0, SUCCESS, "")
        assert server.wait_for_messages(1)[0].auth_user == USER
    else:
        assert code == 2
        assert "(code: auth_requires_tls)" in err
        assert not any(line.startswith("AUTH") for line in server.commands)


# -- environment fallbacks ---------------------------------------------------------------------


def test_credentials_from_env(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True, require_auth=True)
    env = clean_env(FLUXMAIL_USERNAME=USER, FLUXMAIL_PASSWORD=PASSWORD)
    result = run(
        *message_args(server, "--body", "x", "--tls", "--ca-file", str(ca_pem_path())), env=env
    )
    assert_sent(result)
    assert server.wait_for_messages(1)[0].auth_user == USER


def test_host_and_port_from_env(plain_smtp: SMTPTestServer) -> None:
    env = clean_env(FLUXMAIL_HOST=plain_smtp.host, FLUXMAIL_PORT=str(plain_smtp.port))
    assert_sent(run(*message_args(None, "--body", "x"), env=env))
    assert len(plain_smtp.wait_for_messages(1)) == 1


def test_host_with_port_from_env(plain_smtp: SMTPTestServer) -> None:
    env = clean_env(FLUXMAIL_HOST=f"{plain_smtp.host}:{plain_smtp.port}")
    assert_sent(run(*message_args(None, "--body", "x"), env=env))
    assert len(plain_smtp.wait_for_messages(1)) == 1


def test_ssl_and_timeout_from_env(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl")
    env = clean_env(FLUXMAIL_SSL="Yes", FLUXMAIL_TIMEOUT="5")
    assert_sent(run(*message_args(server, "--body", "x", "--ca-file", str(ca_pem_path())), env=env))
    assert server.wait_for_messages(1)[0].tls


def test_tls_from_env(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", require_starttls=True)
    env = clean_env(FLUXMAIL_TLS="true")
    assert_sent(run(*message_args(server, "--body", "x", "--ca-file", str(ca_pem_path())), env=env))
    assert server.wait_for_messages(1)[0].tls


def test_flags_win_over_env(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl", auth=True)
    env = clean_env(
        FLUXMAIL_TYPE="nonsense",
        FLUXMAIL_HOST="127.0.0.1",
        FLUXMAIL_PORT=str(closed_port()),
        FLUXMAIL_TLS="1",  # would clash with --ssl if it were read
        FLUXMAIL_TIMEOUT="not-a-number",
        FLUXMAIL_MAX_RETRIES="not-a-number",
        FLUXMAIL_RETRY_DELAY="not-a-number",
        FLUXMAIL_USERNAME="someone-else@example.com",
        FLUXMAIL_PASSWORD="wrong-pass",
    )
    result = run(
        *message_args(server, "--body", "x", "--ssl", "--ca-file", str(ca_pem_path())),
        "--type", "SMTP", "--timeout", "5", "--max-retries", "0", "--retry-delay", "0",
        "--username", USER, "--password", PASSWORD,
        env=env,
    )  # fmt: skip
    assert_sent(result)
    assert server.wait_for_messages(1)[0].auth_user == USER


@pytest.mark.parametrize(
    "variable",
    ["FLUXMAIL_PORT", "FLUXMAIL_TIMEOUT", "FLUXMAIL_MAX_RETRIES", "FLUXMAIL_RETRY_DELAY"],
)
def test_malformed_number_in_env_is_invalid_config(
    variable: str, plain_smtp: SMTPTestServer
) -> None:
    env = clean_env(**{variable: "twelve"})
    # The port rides in --host, so no flag overrides FLUXMAIL_PORT and it is read.
    host = f"{plain_smtp.host}:{plain_smtp.port}"
    result = run(*message_args(None, "--host", host, "--body", "x"), env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("error: ")
    assert variable in result.stderr
    assert result.stderr.rstrip().endswith("(code: invalid_config)")
    assert plain_smtp.connections == 0


# -- retries -------------------------------------------------------------------------------------


def test_max_retries_gets_past_a_transient_failure(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=1))
    result = run(*message_args(server, "--body", "x", "--max-retries", "1", "--retry-delay", "0"))
    assert (result.returncode, result.stdout) == (0, SUCCESS)
    assert len(server.rejected) == 1  # the first attempt got the 451
    assert len(server.wait_for_messages(1)) == 1


def test_retries_from_env(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=2))
    env = clean_env(FLUXMAIL_MAX_RETRIES="2", FLUXMAIL_RETRY_DELAY="0")
    result = run(*message_args(server, "--body", "x"), env=env)
    assert (result.returncode, result.stdout) == (0, SUCCESS)
    assert (len(server.rejected), len(server.wait_for_messages(1))) == (2, 1)


def test_without_retries_a_transient_failure_fails(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=1))
    result = run(*message_args(server, "--body", "x"))
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: Failed to send email via SMTP after 1 attempt")
    assert lines[0].endswith("(code: send_failed)")
    assert lines[1].startswith("cause: ")
    assert "451" in lines[1]
    assert lines[1].endswith("(code: smtp_transient)")
    assert server.messages == []


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "env", "complaint"),
    [
        pytest.param(
            ["--body", "x", "--body-file", "{tmp}/body.txt"], {}, "--body-file", id="body+file"
        ),
        pytest.param(["--body", "x", "--tls", "--ssl"], {}, "--ssl", id="tls+ssl"),
        pytest.param([], {}, "no body", id="no-body"),
        pytest.param(["--body-file", "{tmp}/missing.txt"], {}, "missing.txt", id="missing-file"),
        pytest.param(["--body-file", "{tmp}"], {}, "--body-file", id="directory"),
        pytest.param(["--body-file", "{tmp}/latin1.txt"], {}, "UTF-8", id="not-utf8"),
        pytest.param(["--body", "x", "--type", "pigeon"], {}, "pigeon", id="unknown-type"),
        pytest.param(["--body", "x"], {"FLUXMAIL_TYPE": "pigeon"}, "FLUXMAIL_TYPE", id="env-type"),
        pytest.param(["--body", "x", "--ca-file", "{tmp}/body.txt"], {}, "--ca-file", id="bad-ca"),
    ],
)
def test_exit_1_for_bad_flags(
    extra: list[str],
    env: dict[str, str],
    complaint: str,
    plain_smtp: SMTPTestServer,
    tmp_path: Path,
) -> None:
    (tmp_path / "body.txt").write_text("not a certificate\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Grüße".encode("latin-1"))
    flags = [arg.format(tmp=tmp_path) for arg in extra]
    result = run(*message_args(plain_smtp, *flags), env=clean_env(**env))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1
    assert complaint in result.stderr
    assert plain_smtp.connections == 0


def test_exit_2_for_an_invalid_recipient(plain_smtp: SMTPTestServer) -> None:
    result = run(*message_args(plain_smtp, "--body", "x", "--recipients", "not-an-address"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("error: The recipient 'not-an-address' is not a valid")
    assert result.stderr.endswith("(code: invalid_email)\n")
    assert plain_smtp.connections == 0


def test_exit_2_for_connection_refused() -> None:
    port = closed_port()
    result = run(
        *message_args(None, "--host", "127.0.0.1", "--port", str(port), "--body", "x"),
        "--username", USER, "--password", PASSWORD,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: Failed to send email via SMTP after 1 attempt")
    assert lines[0].endswith("(code: send_failed)")
    assert lines[1].startswith(f"cause: Connection to 127.0.0.1:{port} was refused")
    assert lines[1].endswith("(code: connection_refused)")
    assert "Traceback" not in result.stderr
    assert_password_hidden(result)


def test_exit_2_without_a_host() -> None:
    result = run(*message_args(None, "--body", "x"))
    assert (result.returncode, result.stdout) == (2, "")
    assert "--host" in result.stderr
    assert "FLUXMAIL_HOST" in result.stderr
    assert result.stderr.endswith("(code: no_relay)\n")


@pytest.mark.skipif(sys.platform == "win32", reason="Outlook is available on Windows")
def test_exit_2_for_outlook_off_windows(plain_smtp: SMTPTestServer) -> None:
    result = run(*message_args(plain_smtp, "--body", "x", "--type", "outlook"))
    assert result.returncode == 2
    assert "Windows" in result.stderr
    assert result.stderr.endswith("(code: invalid_config)\n")


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        pytest.param(["--bogus"], "unrecognized arguments: --bogus", id="unknown-flag"),
        pytest.param(["--port", "smtp"], "argument --port", id="bad-port"),
        pytest.param(["--timeout", "0"], "argument --timeout", id="zero-timeout"),
        pytest.param(["--timeout", "nan"], "argument --timeout", id="nan-timeout"),
        pytest.param(["--retry-delay", "-1"], "argument --retry-delay", id="negative-delay"),
        pytest.param(["--cc"], "argument --cc", id="missing-value"),
    ],
)
def test_exit_2_for_usage_errors(
    flags: list[str], complaint: str, plain_smtp: SMTPTestServer
) -> None:
    result = run(*message_args(plain_smtp, "--body", "x", *flags))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: fluxmail ")
    assert complaint in result.stderr
    assert plain_smtp.connections == 0


def test_exit_2_when_required_flags_are_missing() -> None:
    result = run("--host", "127.0.0.1", "--body", "x")
    assert (result.returncode, result.stdout) == (2, "")
    assert "the following arguments are required: --subject, --recipients" in result.stderr


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For in-process runs: no FLUXMAIL_* variable from the developer's environment."""
    for name in [n for n in os.environ if n.startswith("FLUXMAIL_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def broken_send(monkeypatch: pytest.MonkeyPatch, isolated_env: None) -> None:
    # Nothing a user can do makes the CLI fail unexpectedly (that would be a bug to fix), so
    # the 99 path is driven in-process with a send() that fails the way a bug would.
    def send(self: FluxMail, dry_run: bool = False) -> str:
        raise RuntimeError("something broke\nacross two lines")

    monkeypatch.setattr(FluxMail, "send", send)


def test_exit_99_for_an_unexpected_error(
    broken_send: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([*message_args(None, "--host", "127.0.0.1", "--body", "x")])
    out, err = capsys.readouterr()
    assert (code, out) == (99, "")
    assert err == "unexpected error: RuntimeError: something broke across two lines\n"


def test_fluxmail_debug_shows_the_traceback(
    broken_send: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUXMAIL_DEBUG", "1")
    code = cli.main([*message_args(None, "--host", "127.0.0.1", "--body", "x")])
    err = capsys.readouterr().err
    assert code == 99
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("unexpected error: RuntimeError: something broke across two lines\n")


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], isolated_env: None
) -> None:
    def send(self: FluxMail, dry_run: bool = False) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(FluxMail, "send", send)
    code = cli.main([*message_args(None, "--host", "127.0.0.1", "--body", "x")])
    assert (code, capsys.readouterr().err) == (130, "interrupted\n")


def test_main_returns_instead_of_exiting(
    capsys: pytest.CaptureFixture[str], isolated_env: None
) -> None:
    # argparse would call sys.exit(); main() must hand back the code instead.
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"fluxmail {fluxmail.__version__}\n"
    assert cli.main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: fluxmail ")


# -- fluxmail check ------------------------------------------------------------------------------


def test_check_prints_json_and_sends_nothing(plain_smtp: SMTPTestServer) -> None:
    result = run("check", "--host", plain_smtp.host, "--port", str(plain_smtp.port))
    assert (result.returncode, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["relay"], report["port"]) == (plain_smtp.host, plain_smtp.port)
    assert isinstance(report["latency_ms"], int)
    assert (report["tls"], report["auth"]) == (False, None)
    assert plain_smtp.connections == 1
    assert not any(line.startswith(("MAIL", "RCPT", "DATA")) for line in plain_smtp.commands)


def test_check_with_starttls_and_auth(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True)
    result = run(
        "check", "--host", server.host, "--port", str(server.port), "--tls",
        "--ca-file", str(ca_pem_path()), "--username", USER, "--password", PASSWORD,
        "--timeout", "5",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    assert (report["ok"], report["tls"], report["auth"]) == (True, True, "PLAIN")
    assert_password_hidden(result)
    assert server.messages == []


def test_check_reads_the_environment(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl", auth=True)
    env = clean_env(
        FLUXMAIL_HOST=server.host,
        FLUXMAIL_PORT=str(server.port),
        FLUXMAIL_SSL="1",
        FLUXMAIL_USERNAME=USER,
        FLUXMAIL_PASSWORD=PASSWORD,
    )
    result = run("check", "--ca-file", str(ca_pem_path()), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["auth"] == "PLAIN"
    assert_password_hidden(result)


def test_check_connection_refused_exits_2() -> None:
    port = closed_port()
    result = run("check", "--host", "127.0.0.1", "--port", str(port), "--password", PASSWORD)
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: Could not connect to 127.0.0.1:{port}")
    assert lines[0].endswith("(code: connection_failed)")
    assert lines[1].endswith("(code: connection_refused)")
    assert_password_hidden(result)


def test_check_bad_password_exits_2(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="ssl", auth=True, users={USER: "another-pass"})
    result = run(
        "check", "--host", server.host, "--port", str(server.port), "--ssl",
        "--ca-file", str(ca_pem_path()), "--username", USER, "--password", PASSWORD,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert "(code: auth_failed)" in result.stderr
    assert_password_hidden(result)


def test_check_tls_with_ssl_exits_1() -> None:
    result = run("check", "--host", "127.0.0.1", "--tls", "--ssl")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: --tls (STARTTLS) and --ssl")


def test_check_rejects_message_flags() -> None:
    result = run("check", "--host", "127.0.0.1", "--subject", "S")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: fluxmail check ")
    assert "unrecognized arguments: --subject" in result.stderr
