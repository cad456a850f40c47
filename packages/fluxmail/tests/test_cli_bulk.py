"""``fluxmail bulk``, run as a real process against the testkit's SMTP servers on loopback.

As in test_cli.py, every subprocess gets an environment without any ``FLUXMAIL_*`` variable
and runs with ``-W error``; runs with ``--no-progress`` must leave stderr empty.

The resume guarantee under test (see ``fluxmail bulk --help``): a re-run never sends a row whose
address the log has as sent; after a SIGKILL at most one message per connection, the one whose
acceptance raced the kill, can be sent twice; after a Ctrl-C none.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from flux_testkit.certs import ca_pem_path
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import cli
from fluxmail.bulk import BulkSender

USER = "user@example.com"
PASSWORD = "s3cret-pass"
PYTHON_M_FLUXMAIL_BULK = (sys.executable, "-W", "error", "-m", "fluxmail", "bulk")
NAMES = ["Zoë Ångström", "李雷", "Ñandú Pérez", "Chloé", "Σωκράτης", "O'Brien"]


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment minus every FLUXMAIL_* variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXMAIL_")}
    return env | variables


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTHON_M_FLUXMAIL_BULK, *args],
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start(*args: str) -> subprocess.Popen[str]:
    """Start a bulk run in the background (for the kill and Ctrl-C tests)."""
    return subprocess.Popen(
        [*PYTHON_M_FLUXMAIL_BULK, *args],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def people(count: int) -> list[dict[str, str]]:
    """``count`` rows with unicode names; row 2's note has a comma and quotes."""
    rows = []
    for i in range(1, count + 1):
        note = 'likes "CSV", commas, and quotes' if i == 2 else f"note {i}"
        name = f"{NAMES[i % len(NAMES)]} {i}"
        rows.append({"email": f"user{i}@example.com", "login": f"u{i}", "name": name, "note": note})
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, str]], *, bom: bool = False) -> Path:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_log(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]
    assert all(isinstance(record, dict) for record in records)
    return records


def log_of(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".sent.log")


def message_flags(*extra: str) -> list[str]:
    return [
        "--sender", "News <news@example.com>",
        # Not {{ name }}: MessageTemplate cannot put a short non-ASCII subject yet (see
        # test_a_non_ascii_subject).
        "--subject", "Hello {{ login }}",
        "--text", "Dear {{ name }}, {{ note }}.",
        "--retry-delay", "0",
        *extra,
    ]  # fmt: skip


def flags(server: SMTPTestServer | None, csv_path: Path, *extra: str) -> list[str]:
    """A complete bulk command line for ``csv_path`` (and ``server``), without progress bar."""
    where = [] if server is None else ["--host", server.host, "--port", str(server.port)]
    return [*where, "--csv", str(csv_path), "--no-progress", *message_flags(*extra)]


def recipients(server: SMTPTestServer) -> Counter[str]:
    """How many messages each recipient got."""
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def summary(stdout: str) -> dict[str, str]:
    """The ``name: value`` lines of the summary (the first word of each value)."""
    pairs = (line.split(":", 1) for line in stdout.splitlines() if not line.startswith(" "))
    return {name: value.split()[0] for name, value in pairs if value.strip()}


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_bytes().splitlines()) >= count:
            return
        assert process.poll() is None, "the run ended before the log reached the line count"
        time.sleep(0.01)
    raise AssertionError(f"the log never reached {count} lines")


def assert_password_hidden(result: subprocess.CompletedProcess[str], *logs: Path) -> None:
    assert PASSWORD not in result.stdout + result.stderr
    for log in logs:
        assert not log.exists() or PASSWORD not in log.read_text(encoding="ascii")


# -- sending -------------------------------------------------------------------------------------


def test_every_row_gets_its_personalised_message(
    plain_smtp: SMTPTestServer, tmp_path: Path
) -> None:
    rows = people(30)
    data = write_csv(tmp_path / "people.csv", rows, bom=True)
    result = run(*flags(plain_smtp, data))
    assert (result.returncode, result.stderr) == (0, "")
    assert summary(result.stdout) | {"elapsed": "", "rate": ""} == {
        "rows": "30", "sent": "30", "failed": "0", "skipped": "0", "duplicates": "0",
        "elapsed": "", "rate": "", "log": str(log_of(data)),
    }  # fmt: skip
    received = {m.rcpt_tos[0]: m for m in plain_smtp.wait_for_messages(30)}
    assert recipients(plain_smtp) == Counter(row["email"] for row in rows)
    for row in rows:
        message = received[row["email"]].message
        assert message["Subject"] == f"Hello {row['login']}"
        assert message["From"] == "News <news@example.com>"
        assert message["To"] == row["email"]
        assert message.get_content() == f"Dear {row['name']}, {row['note']}.\n"


def test_the_log_records_every_row(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    rows = people(30)
    data = write_csv(tmp_path / "people.csv", rows)
    assert run(*flags(plain_smtp, data)).returncode == 0
    records = read_log(log_of(data))
    assert sorted(record["row"] for record in records) == list(range(1, 31))
    for record in records:
        assert record["address"] == rows[record["row"] - 1]["email"]
        assert (record["status"], record["code"], record["reply"]) == ("sent", None, "250 OK")
        assert set(record) == {"row", "address", "status", "code", "reply", "queue_id", "at"}
    if sys.platform != "win32":
        assert log_of(data).stat().st_mode & 0o077 == 0  # the recipients are personal data


def test_a_non_ascii_subject(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    rows = people(3)
    data = write_csv(tmp_path / "people.csv", rows)
    result = run(*flags(plain_smtp, data, "--subject", "Hello {{ name }}"))
    assert (result.returncode, result.stderr) == (0, "")
    subjects = {m.rcpt_tos[0]: m.message["Subject"] for m in plain_smtp.wait_for_messages(3)}
    assert subjects == {row["email"]: f"Hello {row['name']}" for row in rows}


def test_html_reply_to_and_attachments(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(3))
    html = tmp_path / "body.html"
    html.write_text("<p>Dear {{ name }} &amp; co</p>\n", encoding="utf-8")
    text = tmp_path / "body.txt"
    text.write_text("Dear {{ name }}\n", encoding="utf-8")
    attachment = tmp_path / "terms.txt"
    attachment.write_text("the terms\n", encoding="utf-8")
    result = run(
        "--host", plain_smtp.host, "--port", str(plain_smtp.port), "--csv", str(data),
        "--no-progress", "--sender", "news@example.com", "--subject", "Hi {{ login }}",
        "--text-file", str(text), "--html-file", str(html), "--reply-to", "help@example.com",
        "--attachments", str(attachment),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    message = plain_smtp.wait_for_messages(3)[0].message
    name = next(row["name"] for row in people(3) if message["Subject"] == f"Hi {row['login']}")
    assert message["Reply-To"] == "help@example.com"
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    # rstrip: MessageTemplate's multipart parts lose their last newline (the CRLF before a
    # boundary belongs to the boundary, RFC 2046 5.1.1), where create()'s keep it.
    assert plain.get_content().rstrip("\n") == f"Dear {name}"
    assert rich.get_content().rstrip("\n") == f"<p>Dear {name} &amp; co</p>"
    (part,) = message.iter_attachments()
    assert (part.get_filename(), part.get_content()) == ("terms.txt", "the terms\n")


def test_custom_address_column_and_duplicates(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    rows = [
        {"Mail": "a@example.com", "login": "a", "name": "A", "note": "1"},
        {"Mail": "A@Example.com ", "login": "a2", "name": "A again", "note": "2"},  # the same
        {"Mail": "b@example.com", "login": "b", "name": "B", "note": "3"},
    ]
    data = write_csv(tmp_path / "people.csv", rows)
    result = run(*flags(plain_smtp, data, "--to-column", "Mail"))
    assert (result.returncode, result.stderr) == (0, "")
    assert summary(result.stdout)["sent"] == "2"
    assert summary(result.stdout)["duplicates"] == "1"
    assert recipients(plain_smtp) == Counter({"a@example.com": 1, "b@example.com": 1})


def test_progress_bar_goes_to_stderr(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(5))
    args = [arg for arg in flags(plain_smtp, data) if arg != "--no-progress"]
    result = run(*args)
    assert result.returncode == 0
    assert "5/5 sent 5, failed 0" in result.stderr  # one final line when not on a terminal
    assert "[" not in result.stdout


def test_rate_limit_flags_are_accepted(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(6))
    result = run(
        *flags(plain_smtp, data, "--rate", "500", "--burst", "3", "--max-per-hour", "100000"),
        "--connections", "2",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert len(plain_smtp.wait_for_messages(6)) == 6


def test_starttls_auth_and_the_password_stays_hidden(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    server = smtp_server(tls="starttls", auth=True, auth_require_tls=True, require_auth=True)
    data = write_csv(tmp_path / "people.csv", people(4))
    result = run(
        *flags(server, data, "--tls", "--ca-file", str(ca_pem_path())),
        "--username", USER, "--password", PASSWORD,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    messages = server.wait_for_messages(4)
    assert all(m.tls and m.auth_user == USER for m in messages)
    assert_password_hidden(result, log_of(data))


def test_connection_settings_and_retries_from_env(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    # Bulk retries twice by default: two transient 451s still end in every row sent.
    server = smtp_server(faults=Faults(transient_failures=2))
    data = write_csv(tmp_path / "people.csv", people(3))
    env = clean_env(
        FLUXMAIL_HOST=server.host, FLUXMAIL_PORT=str(server.port), FLUXMAIL_RETRY_DELAY="0"
    )
    result = run(*flags(None, data), env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert (len(server.rejected), len(server.wait_for_messages(3))) == (2, 3)


def test_max_retries_zero_leaves_a_transient_failure_failed(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    server = smtp_server(faults=Faults(transient_failures=1))
    data = write_csv(tmp_path / "people.csv", people(3))
    result = run(*flags(server, data, "--max-retries", "0", "--connections", "1"))
    assert result.returncode == 3
    (failed,) = [r for r in read_log(log_of(data)) if r["status"] == "failed"]
    assert failed["code"] == "smtp_transient"
    assert "451 4.3.0 Temporary failure" in failed["reply"]


# -- failures and resuming -----------------------------------------------------------------------


def test_refused_recipient_exits_3_and_the_rest_is_sent(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"user7@example.com": (550, "5.1.1 no")}))
    data = write_csv(tmp_path / "people.csv", people(10))
    result = run(*flags(server, data))
    assert (result.returncode, result.stderr) == (3, "")
    counts = summary(result.stdout)
    assert (counts["rows"], counts["sent"], counts["failed"]) == ("10", "9", "1")
    assert "errors by code (first 3 of each):\n  recipients_refused: 1\n" in result.stdout
    assert "    row 7 user7@example.com: All recipients were refused" in result.stdout
    assert "user7@example.com" not in recipients(server)
    assert len(recipients(server)) == 9
    (failed,) = [r for r in read_log(log_of(data)) if r["status"] == "failed"]
    assert (failed["row"], failed["address"], failed["code"]) == (
        7,
        "user7@example.com",
        "recipients_refused",
    )
    assert "550 5.1.1 no" in failed["reply"]


def test_a_second_run_sends_nothing(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(12))
    assert run(*flags(plain_smtp, data)).returncode == 0
    connections = plain_smtp.connections
    again = run(*flags(plain_smtp, data))
    assert (again.returncode, again.stderr) == (0, "")
    assert (summary(again.stdout)["sent"], summary(again.stdout)["skipped"]) == ("0", "12")
    assert plain_smtp.connections == connections  # with nothing to send, it does not connect
    assert len(plain_smtp.messages) == 12
    assert len(read_log(log_of(data))) == 12


def test_a_second_run_retries_only_the_failed_rows(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    refused = {"user3@example.com": (550, "5.1.1 no"), "user5@example.com": (550, "5.1.1 no")}
    server = smtp_server(faults=Faults(refuse_recipients=refused))
    data = write_csv(tmp_path / "people.csv", people(8))
    assert run(*flags(server, data)).returncode == 3
    server.faults.refuse_recipients = {}
    again = run(*flags(server, data))
    assert (again.returncode, again.stderr) == (0, "")
    assert (summary(again.stdout)["sent"], summary(again.stdout)["skipped"]) == ("2", "6")
    assert recipients(server) == Counter(f"user{i}@example.com" for i in range(1, 9))
    statuses = [(r["address"], r["status"]) for r in read_log(log_of(data))]
    assert statuses.count(("user3@example.com", "failed")) == 1
    assert statuses.count(("user3@example.com", "sent")) == 1


def test_custom_log_path(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(3))
    log = tmp_path / "elsewhere" / "run.jsonl"
    log.parent.mkdir()
    assert run(*flags(plain_smtp, data, "--log", str(log))).returncode == 0
    assert len(read_log(log)) == 3
    assert not log_of(data).exists()


def test_a_torn_last_line_does_not_break_resuming(
    plain_smtp: SMTPTestServer, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "people.csv", people(4))
    sent = {"row": 1, "address": "user1@example.com", "status": "sent", "code": None}
    # A machine crash mid-write can leave half a line, without its newline.
    log_of(data).write_text(json.dumps(sent) + '\n{"row": 2, "address": "user2@exa', "ascii")
    result = run(*flags(plain_smtp, data))
    assert result.returncode == 0
    assert result.stderr == "warning: ignored 1 unreadable line(s) in the log\n"
    assert summary(result.stdout)["skipped"] == "1"
    assert sorted(recipients(plain_smtp)) == [f"user{i}@example.com" for i in (2, 3, 4)]
    # The torn line kept to itself: every record appended after it parses.
    lines = log_of(data).read_text(encoding="ascii").splitlines()
    assert [json.loads(line)["status"] for line in lines[2:]] == ["sent"] * 3
    again = run(*flags(plain_smtp, data))
    assert (again.returncode, summary(again.stdout)["skipped"]) == (0, "4")


@pytest.mark.slow
def test_killed_run_resumes_without_mailing_anyone_twice(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    # Every final reply takes 50 ms, so the run is slow enough to be killed midway.
    server = smtp_server(faults=Faults(delay_reply_seconds=0.05))
    rows = people(40)
    data = write_csv(tmp_path / "people.csv", rows)
    process = start(*flags(server, data, "--connections", "2"))
    try:
        wait_for_lines(log_of(data), 5, process)
    finally:
        process.kill()  # SIGKILL: no handler, no cleanup
        process.communicate()
    logged_sent = {r["address"] for r in read_log(log_of(data)) if r["status"] == "sent"}
    assert 5 <= len(logged_sent) < 40
    server.faults.delay_reply_seconds = 0
    again = run(*flags(server, data, "--connections", "2"))
    assert (again.returncode, again.stderr) == (0, "")
    assert summary(again.stdout)["skipped"] == str(len(logged_sent))
    counts = recipients(server)
    assert set(counts) == {row["email"] for row in rows}  # everyone got the message...
    twice = {address for address, count in counts.items() if count > 1}
    # ...once, but for a message in flight when the process died: the relay may have accepted
    # it before its log line was written. One per connection at most, and never a logged one.
    # (This server drops a message whose client vanishes during the delay, so usually none.)
    assert len(twice) <= 2
    assert not twice & logged_sent
    assert all(count <= 2 for count in counts.values())


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGINT to send on Windows")
@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_logs_every_accepted_message(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    server = smtp_server(faults=Faults(delay_reply_seconds=0.1))
    rows = people(30)
    data = write_csv(tmp_path / "people.csv", rows)
    process = start(*flags(server, data, "--connections", "2"))
    wait_for_lines(log_of(data), 3, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert stderr.endswith("interrupted\n")
    assert "stopping after the messages in flight" in stderr
    assert int(summary(stdout)["not sent"]) > 0  # rows the interrupted run did not reach
    logged_sent = [r["address"] for r in read_log(log_of(data)) if r["status"] == "sent"]
    # A clean stop logs every message the relay accepted, in flight ones included.
    assert Counter(logged_sent) == recipients(server)
    server.faults.delay_reply_seconds = 0
    assert run(*flags(server, data)).returncode == 0
    assert recipients(server) == Counter(row["email"] for row in rows)


@pytest.mark.skipif(sys.platform == "win32", reason="the log is only locked on POSIX")
def test_two_runs_cannot_share_a_log(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    import fcntl

    data = write_csv(tmp_path / "people.csv", people(2))
    with log_of(data).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run(*flags(plain_smtp, data))
    assert (result.returncode, result.stdout) == (1, "")
    assert "in use by another fluxmail bulk run" in result.stderr
    assert plain_smtp.connections == 0


def test_a_row_that_cannot_render_fails_alone(plain_smtp: SMTPTestServer, tmp_path: Path) -> None:
    rows = [
        {"email": "a@example.com", "shares": "2"},
        {"email": "not-an-address", "shares": "5"},
        {"email": "c@example.com", "shares": "0"},  # a ZeroDivisionError in the template
        {"email": "d@example.com", "shares": "5"},
    ]
    data = write_csv(tmp_path / "people.csv", rows)
    result = run(
        "--host", plain_smtp.host, "--port", str(plain_smtp.port), "--csv", str(data),
        "--no-progress", "--sender", "news@example.com", "--subject", "Your shares",
        "--text", "Each is worth {{ 10 // (shares | int) }}",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (3, "")
    assert "  invalid_email: 1\n" in result.stdout
    assert "  template_error: 1\n    row 3 c@example.com: " in result.stdout
    failed = {r["address"]: r["code"] for r in read_log(log_of(data)) if r["status"] == "failed"}
    assert failed == {"not-an-address": "invalid_email", "c@example.com": "template_error"}
    bodies = {m.rcpt_tos[0]: m.message.get_content() for m in plain_smtp.wait_for_messages(2)}
    assert bodies == {"a@example.com": "Each is worth 5\n", "d@example.com": "Each is worth 2\n"}


# -- several processes ---------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="--processes forks")
def test_processes_share_the_rows_and_the_log_has_each_once(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    refused = "user77@example.com"
    server = smtp_server(faults=Faults(refuse_recipients={refused: (550, "5.1.1 no")}))
    rows = [*people(600), {"email": "not-an-address", "login": "x", "name": "x", "note": "x"}]
    data = write_csv(tmp_path / "people.csv", rows)
    # With the progress bar: the parent draws it from what both workers report.
    argv = [a for a in flags(server, data, "--processes", "2") if a != "--no-progress"]
    result = run(*argv, "--connections", "3")
    assert result.returncode == 3, result.stderr
    counts = summary(result.stdout)
    assert (counts["rows"], counts["sent"], counts["failed"]) == ("601", "599", "2")
    assert "  recipients_refused: 1\n" in result.stdout
    assert "  invalid_email: 1\n" in result.stdout
    assert result.stderr.endswith("] 601/601 sent 599, failed 2, " + result.stderr.split(", ")[-1])
    # Every address but the two failures got exactly its own message, once.
    assert recipients(server) == Counter(
        row["email"] for row in rows if row["email"] not in (refused, "not-an-address")
    )
    received = {m.rcpt_tos[0]: m.message for m in server.messages}
    for row in rows[:600:37]:
        if row["email"] != refused:
            assert received[row["email"]]["Subject"] == f"Hello {row['login']}"
            assert received[row["email"]].get_content() == f"Dear {row['name']}, {row['note']}.\n"
    records = read_log(log_of(data))
    assert sorted(record["row"] for record in records) == list(range(1, 602))
    failed = {r["address"]: r["code"] for r in records if r["status"] == "failed"}
    assert failed == {refused: "recipients_refused", "not-an-address": "invalid_email"}
    # The parent's connection check, then two processes with up to three connections each.
    assert 3 <= server.connections <= 7
    again = run(*flags(server, data, "--processes", "2"))
    assert summary(again.stdout)["skipped"] == "599"
    assert sum(recipients(server).values()) == 599  # the resumed run mailed no one again


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGINT to send on Windows")
@pytest.mark.slow
def test_ctrl_c_with_processes_logs_every_accepted_message(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    server = smtp_server(faults=Faults(delay_reply_seconds=0.1))
    rows = people(200)
    data = write_csv(tmp_path / "people.csv", rows)
    process = start(*flags(server, data, "--connections", "2", "--processes", "2"))
    wait_for_lines(log_of(data), 6, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert int(summary(stdout)["not sent"]) > 0
    logged_sent = [r["address"] for r in read_log(log_of(data)) if r["status"] == "sent"]
    # The workers stopped with their messages in flight, and every one accepted was logged.
    assert Counter(logged_sent) == recipients(server)
    server.faults.delay_reply_seconds = 0
    assert run(*flags(server, data, "--processes", "2")).returncode == 0
    assert recipients(server) == Counter(row["email"] for row in rows)


# -- dry run -------------------------------------------------------------------------------------


def test_dry_run_renders_every_row_and_connects_to_nothing(
    plain_smtp: SMTPTestServer, tmp_path: Path
) -> None:
    rows = people(5)
    rows[3]["email"] = "not-an-address"
    data = write_csv(tmp_path / "people.csv", rows)
    result = run(*flags(plain_smtp, data, "--dry-run"), "--password", PASSWORD)
    assert (result.returncode, result.stderr) == (3, "")
    lines = result.stdout.splitlines()
    assert lines[:6] == [
        "dry run: nothing was sent",
        "rows:           5",
        "would send:     4",
        "skipped:        0 (already sent, per the log)",
        "duplicates:     0 (address repeated in the CSV)",
        "fail to render: 1",
    ]
    assert lines[6].startswith("  row 4 not-an-address: The recipient 'not-an-address'")
    assert lines[6].endswith("(code: invalid_email)")
    assert plain_smtp.connections == 0
    assert not log_of(data).exists()
    assert_password_hidden(result)


def test_dry_run_needs_no_relay_and_counts_what_the_log_skips(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(5))
    sent = {"row": 2, "address": "user2@example.com", "status": "sent"}
    log_of(data).write_text(json.dumps(sent) + "\n", encoding="ascii")
    result = run(*flags(None, data, "--dry-run"))
    assert (result.returncode, result.stderr) == (0, "")
    assert summary(result.stdout)["would send"] == "4"
    assert summary(result.stdout)["skipped"] == "1"


# -- exit codes ----------------------------------------------------------------------------------


@pytest.fixture
def csv_files(tmp_path: Path) -> Path:
    """A directory of CSV and template files, good and bad, for the exit code tests."""
    write_csv(tmp_path / "good.csv", people(2))
    write_csv(tmp_path / "mail_column.csv", [{"mail": "a@example.com", "name": "A"}])
    write_csv(tmp_path / "to_column.csv", [{"to": "a@example.com", "name": "A"}])
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    (tmp_path / "latin1.csv").write_bytes("email,name\na@example.com,Jürgen\n".encode("latin-1"))
    (tmp_path / "ragged.csv").write_text(
        "email,name\na@example.com,A\nb@example.com,B,surplus\n", encoding="utf-8"
    )
    (tmp_path / "twice.csv").write_text("email,name,name\na@example.com,A,B\n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("Grüße".encode("latin-1"))
    return tmp_path


@pytest.mark.parametrize(
    ("csv_name", "extra", "complaint"),
    [
        pytest.param("good.csv", ["--text-file", "{dir}/good.csv"], "--text-file", id="text+file"),
        pytest.param("good.csv", ["--text", None], "no text body", id="no-text"),
        pytest.param("missing.csv", [], "missing.csv", id="missing-csv"),
        pytest.param("empty.csv", [], "no header row", id="empty-csv"),
        pytest.param("latin1.csv", [], "line 2: not UTF-8", id="not-utf8"),
        pytest.param("ragged.csv", [], "line 3: 3 fields where the header has 2", id="ragged"),
        pytest.param("twice.csv", [], "'name' appears twice", id="repeated-column"),
        pytest.param("mail_column.csv", [], "no column 'email'", id="no-address-column"),
        pytest.param("to_column.csv", ["--to-column", "to"], "named 'to'", id="reserved"),
        pytest.param(
            "good.csv", ["--text", None, "--text-file", "{dir}/nope.txt"], "nope.txt", id="text"
        ),
        pytest.param("good.csv", ["--html-file", "{dir}/latin1.txt"], "UTF-8", id="html-latin1"),
        pytest.param("good.csv", ["--burst", "5"], "--burst", id="burst-without-rate"),
        pytest.param("good.csv", ["--tls", "--ssl"], "--ssl", id="tls+ssl"),
        pytest.param("good.csv", ["--type", "outlook"], "SMTP relay", id="outlook"),
        pytest.param("good.csv", ["--log", "{dir}/no/such/dir/log"], "--log", id="log-dir"),
    ],
)
def test_exit_1_for_bad_flags_and_files(
    csv_name: str,
    extra: list[str | None],
    complaint: str,
    plain_smtp: SMTPTestServer,
    csv_files: Path,
) -> None:
    args = flags(plain_smtp, csv_files / csv_name)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        assert flag is not None
        if value is None:  # drop the flag (and its value) from the defaults
            at = args.index(flag)
            del args[at : at + 2]
        else:
            args += [flag, value.format(dir=csv_files)]
    result = run(*args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.splitlines()) == 1
    assert complaint in result.stderr
    assert plain_smtp.connections == 0
    assert plain_smtp.messages == []


@pytest.mark.parametrize(
    ("extra", "env", "code"),
    [
        pytest.param(["--subject", "Hi {{ name"], {}, "template_error", id="template-syntax"),
        pytest.param(["--sender", "not an address"], {}, "invalid_email", id="bad-sender"),
        pytest.param(["--attachments", "{dir}/none.pdf"], {}, "attachment_not_found", id="att"),
        pytest.param([], {"FLUXMAIL_TIMEOUT": "soon"}, "invalid_config", id="invalid-config"),
    ],
)
def test_exit_2_for_a_fluxmail_error_that_stops_the_run(
    extra: list[str],
    env: dict[str, str],
    code: str,
    plain_smtp: SMTPTestServer,
    tmp_path: Path,
) -> None:
    data = write_csv(tmp_path / "people.csv", people(3))
    args = flags(plain_smtp, data, *(arg.replace("{dir}", str(tmp_path)) for arg in extra))
    result = run(*args, env=clean_env(**env))
    assert (result.returncode, result.stdout) == (2, "")
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: ")
    assert first.endswith(f"(code: {code})")
    assert plain_smtp.connections == 0
    assert not log_of(data).exists() or read_log(log_of(data)) == []


def test_exit_2_when_the_relay_cannot_be_reached(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(3))
    port = closed_port()
    result = run(*flags(None, data, "--host", "127.0.0.1", "--port", str(port)))
    assert (result.returncode, result.stdout) == (2, "")
    lines = result.stderr.splitlines()
    assert lines[0].endswith("(code: connection_failed)")
    assert lines[1].endswith("(code: connection_refused)")
    assert read_log(log_of(data)) == []  # nothing was attempted


def test_exit_2_for_a_wrong_password_that_stays_hidden(
    smtp_server: SMTPServerFactory, tmp_path: Path
) -> None:
    server = smtp_server(tls="ssl", auth=True, users={USER: "another-pass"})
    data = write_csv(tmp_path / "people.csv", people(3))
    result = run(
        *flags(server, data, "--ssl", "--ca-file", str(ca_pem_path())),
        env=clean_env(FLUXMAIL_USERNAME=USER, FLUXMAIL_PASSWORD=PASSWORD),
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert "(code: auth_failed)" in result.stderr
    assert_password_hidden(result, log_of(data))
    assert server.messages == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--connections", "0"),
        ("--processes", "0"),
        ("--rate", "-1"),
        ("--max-per-hour", "x"),
        ("--burst", "0"),
    ],
)
def test_exit_2_for_usage_errors(flag: str, value: str, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "people.csv", people(1))
    result = run(*flags(None, data, flag, value))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("usage: fluxmail bulk ")
    assert f"argument {flag}" in result.stderr


def test_help_documents_the_log_and_the_exit_codes() -> None:
    result = run("--help")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: fluxmail bulk ")
    for words in ('{"row": 3, "address": ', "JSON Lines", "3 the run completed but some rows"):
        assert words in result.stdout


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For in-process runs: no FLUXMAIL_* variable from the developer's environment."""
    for name in [n for n in os.environ if n.startswith("FLUXMAIL_")]:
        monkeypatch.delenv(name)


def test_exit_99_for_an_unexpected_error(
    plain_smtp: SMTPTestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    isolated_env: None,
) -> None:
    # Nothing a user can do makes bulk fail unexpectedly (that would be a bug to fix), so the
    # 99 path is driven in-process with a send_rows that fails the way a bug would.
    def send_rows(self: BulkSender, *args: object, **kwargs: object) -> None:
        raise RuntimeError("something broke")

    monkeypatch.setattr(BulkSender, "send_rows", send_rows)
    data = write_csv(tmp_path / "people.csv", people(2))
    handler = signal.getsignal(signal.SIGINT)
    code = cli.main(["bulk", *flags(plain_smtp, data)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (99, "", "unexpected error: RuntimeError: something broke\n")
    assert signal.getsignal(signal.SIGINT) is handler  # the Ctrl-C handler was put back
