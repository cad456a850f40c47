"""``BulkSender.send_rows(processes=N)`` (``fluxmail/processes.py``).

The sends run in a fresh interpreter (a subprocess): forking this test process, with the test
server's threads in it, is not what a user's program does. ``fluxmail bulk --processes`` is
tested end to end in test_cli_bulk.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults
from fluxmail import FluxMailException, RateLimit
from fluxmail.bulk import BulkSender
from fluxmail.client import FluxMail
from fluxmail.compose import MessageTemplate
from fluxmail.processes import fork_context, share_rate

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from fluxmail import BulkSender, FluxMail, MessageTemplate, SendResult

    port = int(sys.argv[1])
    mailer = FluxMail("smtp", "127.0.0.1", port=port, retry_delay=0)
    template = MessageTemplate(sender="news@example.com", subject="Hi {{ n }}", text="No {{ n }}")
    rows = [{"email": f"user{i}@example.com", "n": i} for i in range(500)]
    rows[7]["n"] = lambda: None  # cannot be handed to a worker process
    rows[9]["email"] = "not-an-address"  # cannot be rendered
    seen = []

    def on_result(index, row, outcome):
        ok = isinstance(outcome, SendResult)
        seen.append([index, row["email"], ok, None if ok else outcome.code])

    report = BulkSender(mailer).send_rows(
        template, rows, processes=2, max_connections=3, progress=False, on_result=on_result
    )
    errors = sorted([index, exc.code] for index, exc in report["errors"])
    print(json.dumps({"sent": report["sent"], "failed": report["failed"],
                      "total": report["total"], "errors": errors, "seen": seen}))
    """
)


def test_rows_are_shared_out_and_each_is_settled_once_in_the_caller(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"user42@example.com": (550, "5.1.1 no")}))
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, str(server.port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["sent"], report["failed"], report["total"]) == (497, 3, 500)
    assert report["errors"] == [
        [7, "invalid_params"],
        [9, "invalid_email"],
        [42, "recipients_refused"],
    ]
    seen = report["seen"]
    assert sorted(index for index, *_ in seen) == list(range(500))  # each row once
    assert all(email == f"user{i}@example.com" for i, email, *_ in seen if i != 9)
    delivered = Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)
    assert delivered == Counter(f"user{i}@example.com" for i in range(500) if i not in (7, 9, 42))
    # Two workers with up to three connections each.
    assert 2 <= server.connections <= 6


def test_a_rate_limit_is_shared_out_among_the_processes() -> None:
    limit = RateLimit(per_second=90, burst=3, max_per_period=10_000, period=3600)
    assert share_rate(limit, 3) == RateLimit(
        per_second=30, burst=3, max_per_period=3333, period=3600
    )
    assert share_rate(RateLimit(per_second=10), 4) == RateLimit(per_second=2.5)
    assert share_rate(None, 4) is None


@pytest.mark.parametrize("processes", [0, -1, 1.5, True, "2"])
def test_processes_must_be_a_count(processes: object) -> None:
    with pytest.raises(FluxMailException) as info:
        fork_context(processes)  # type: ignore[arg-type]
    assert info.value.code == "invalid_config"
    mailer = FluxMail("smtp", "127.0.0.1", port=1)
    template = MessageTemplate(sender="a@example.com", subject="x", text="x")
    with pytest.raises(FluxMailException) as again:  # before anything is read or sent
        BulkSender(mailer).send_rows(template, iter(()), processes=processes)  # type: ignore[arg-type]
    assert again.value.code == "invalid_config"
