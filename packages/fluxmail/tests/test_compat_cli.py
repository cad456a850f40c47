"""FluxMail 0.3.x's command line: its ``--no-*`` flags, and its Typer app, run as real processes.

``fluxmail.fluxmail_cli.app`` is the Typer app 0.3.x shipped (scripts and tests drive it); it
hands its options to the ``fluxmail`` command, so the two must agree on what is sent and on
the exit codes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flux_testkit.smtpd import SMTPTestServer

TYPER_APP = (sys.executable, "-W", "error", "-c", "from fluxmail.fluxmail_cli import main; main()")
FLUXMAIL = (sys.executable, "-W", "error", "-m", "fluxmail")
SUCCESS = "Email sent successfully via SMTP.\n"


def run(command: tuple[str, ...], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_")}
    return subprocess.run(
        [*command, *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def message(server: SMTPTestServer, *extra: str) -> list[str]:
    return [
        "--type", "smtp", "--host", server.host, "--port", str(server.port),
        "--subject", "Hello", "--recipients", "a@example.com", "--recipients", "b@example.com",
        "--username", "from@example.com", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("command", [FLUXMAIL, TYPER_APP], ids=["fluxmail", "typer-app"])
def test_sends_with_033_flags(plain_smtp: SMTPTestServer, command: tuple[str, ...]) -> None:
    result = run(
        command,
        *message(plain_smtp, "--body", "<b>Hi</b>", "--html", "--cc", "c@example.com"),
        "--no-tls", "--no-ssl", "--no-dry-run", "--timeout", "2.5", "--max-retries", "1",
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, SUCCESS, "")
    received = plain_smtp.wait_for_messages(1)[0]
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == ["a@example.com", "b@example.com", "c@example.com"]
    assert received.message.get_content_type() == "text/html"


@pytest.mark.parametrize("command", [FLUXMAIL, TYPER_APP], ids=["fluxmail", "typer-app"])
def test_no_html_and_dry_run(plain_smtp: SMTPTestServer, command: tuple[str, ...]) -> None:
    result = run(command, *message(plain_smtp, "--body", "<b>Hi</b>", "--no-html", "--dry-run"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Email Preview:\n")
    assert "Content-Type: text/plain" in result.stdout
    assert plain_smtp.connections == 0


def test_no_tls_overrides_the_variable(plain_smtp: SMTPTestServer) -> None:
    # FLUXMAIL_TLS=true against a server without STARTTLS fails; --no-tls pins it off.
    failing = run(FLUXMAIL, *message(plain_smtp, "--body", "Hi"), FLUXMAIL_TLS="true")
    assert failing.returncode == 2
    assert "STARTTLS" in failing.stderr
    result = run(FLUXMAIL, *message(plain_smtp, "--body", "Hi", "--no-tls"), FLUXMAIL_TLS="true")
    assert (result.returncode, result.stdout) == (0, SUCCESS)


def test_no_ssl_overrides_the_variable(plain_smtp: SMTPTestServer) -> None:
    result = run(FLUXMAIL, *message(plain_smtp, "--body", "Hi", "--no-ssl"), FLUXMAIL_SSL="1")
    assert (result.returncode, result.stdout) == (0, SUCCESS)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--body", "Hi", "--body-file", "x.txt"], 1),
        (["--body", "Hi", "--tls", "--ssl"], 1),
        ([], 1),
        (["--body-file", "/nonexistent/body.txt"], 1),
        (["--body", "Hi", "--type", "fax"], 1),
        (["--body", "Hi", "--recipients", "not-an-address"], 2),
    ],
)
def test_typer_app_exit_codes(plain_smtp: SMTPTestServer, extra: list[str], code: int) -> None:
    # The later --type wins in both parsers, so "fax" replaces message()'s "smtp".
    result = run(TYPER_APP, *message(plain_smtp, *extra))
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert plain_smtp.messages == []


def test_typer_app_version_and_help() -> None:
    import fluxmail

    version = run(TYPER_APP, "--version")
    assert (version.returncode, version.stdout) == (0, f"fluxmail {fluxmail.__version__}\n")
    helped = run(TYPER_APP, "--help")
    assert helped.returncode == 0
    assert "--no-tls" in helped.stdout


def test_typer_app_takes_the_password_from_the_environment(plain_smtp: SMTPTestServer) -> None:
    # The password may only be sent over TLS to a remote host; on loopback AUTH would be tried
    # and this server offers none, so the refusal proves the password was picked up.
    result = run(TYPER_APP, *message(plain_smtp, "--body", "Hi"), FLUXMAIL_PASSWORD="pw-123")
    assert result.returncode == 2
    assert "SMTP AUTH extension not supported" in result.stderr
    assert "pw-123" not in result.stderr
