"""BulkSender (sync and async) over one connection, and EmailTemplate."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer
from fluxmail import BulkSender, EmailTemplate, FluxMail, FluxMailException


def batch(n: int, bad: set[int] = frozenset()) -> list[dict[str, object]]:
    return [
        {
            "subject": f"Hello {i}",
            "recipients": ["not-an-address" if i in bad else f"user{i}@example.com"],
            "body": f"Message {i}",
        }
        for i in range(n)
    ]


def test_send_batch_over_one_connection(
    mailer: FluxMail, plain_smtp: SMTPTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    successes: list[int] = []
    failures: list[tuple[int, str | None]] = []
    report = BulkSender(mailer).send_batch(
        batch(6, bad={2, 4}),
        on_success=lambda i, msg: successes.append(i),
        on_error=lambda i, msg, exc: failures.append((i, exc.code)),
    )
    assert (report["sent"], report["failed"], report["total"]) == (4, 2, 6)
    assert [i for i, _ in report["errors"]] == [2, 4]
    assert all(exc.code == "invalid_email" for _, exc in report["errors"])
    assert successes == [0, 1, 3, 5]
    assert failures == [(2, "invalid_email"), (4, "invalid_email")]
    assert [r is None for r in report.results] == [False, False, True, False, True, False]
    assert [m.rcpt_tos[0] for m in plain_smtp.messages] == [
        "user0@example.com",
        "user1@example.com",
        "user3@example.com",
        "user5@example.com",
    ]
    assert plain_smtp.connections == 1
    assert "6/6" in capsys.readouterr().err  # the progress bar's final line


def test_relay_failures_are_recorded_and_batch_goes_on(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"user1@example.com": (550, "5.1.1 no")}))
    mailer = FluxMail("smtp", server.host, port=server.port, sender="news@example.com")
    report = BulkSender(mailer).send_batch(batch(3), progress=False)
    assert (report["sent"], report["failed"]) == (2, 1)
    index, exc = report["errors"][0]
    assert index == 1
    assert exc.code == "send_failed"
    assert getattr(exc.__cause__, "code", None) == "recipients_refused"
    assert server.connections == 1


def test_batch_inside_an_open_session_keeps_it_open(
    mailer: FluxMail, plain_smtp: SMTPTestServer
) -> None:
    with mailer:
        BulkSender(mailer).send_batch(batch(2), progress=False)
        assert mailer.in_context
        mailer.create("after", ["x@example.com"], "x").send()
    assert plain_smtp.connections == 1
    assert len(plain_smtp.messages) == 3


async def test_send_batch_async(mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
    done: list[int] = []
    report = await BulkSender(mailer).send_batch_async(
        batch(5, bad={0}), on_success=lambda i, m: done.append(i), progress=False,
        max_per_second=200,
    )  # fmt: skip
    assert (report["sent"], report["failed"], report["total"]) == (4, 1, 5)
    assert done == [1, 2, 3, 4]
    assert plain_smtp.connections == 1
    assert len(plain_smtp.messages) == 4


async def test_send_batch_async_retries(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(transient_failures=2))
    mailer = FluxMail(
        "smtp", server.host, port=server.port, sender="a@example.com", max_retries=2,
        retry_delay=0,
    )  # fmt: skip
    report = await BulkSender(mailer).send_batch_async(batch(3), progress=False)
    assert report["sent"] == 3
    assert len(server.rejected) == 2


class TestTemplate:
    def test_render(self) -> None:
        template = EmailTemplate("Hi {{ name }}{% if vip %}, VIP{% endif %}!")
        assert template.render(name="Ada", vip=True) == "Hi Ada, VIP!"
        assert template.render(name="<b>") == "Hi <b>!"

    def test_autoescape(self) -> None:
        assert EmailTemplate("<p>{{ x }}</p>", autoescape=True).render(x="<script>") == (
            "<p>&lt;script&gt;</p>"
        )

    def test_from_file(self, tmp_path: Path) -> None:
        path = tmp_path / "welcome.html"
        path.write_text("Welcome {{ user }} — ✓\n", encoding="utf-8")
        assert EmailTemplate.from_file(path).render(user="Grace") == "Welcome Grace — ✓\n"
        assert EmailTemplate.from_file(str(path)).render(user="x").startswith("Welcome x")

    @pytest.mark.parametrize("name", ["missing.html", "binary.bin", "folder"])
    def test_bad_file_is_read_error(self, tmp_path: Path, name: str) -> None:
        (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00bad")
        (tmp_path / "folder").mkdir()
        with pytest.raises(FluxMailException) as info:
            EmailTemplate.from_file(tmp_path / name)
        assert info.value.code == "read_error"

    def test_syntax_error(self) -> None:
        with pytest.raises(FluxMailException) as info:
            EmailTemplate("Hello {{ name ")
        assert info.value.code == "template_error"
        assert "line 1" in str(info.value)

    def test_template_into_a_send(self, mailer: FluxMail, plain_smtp: SMTPTestServer) -> None:
        subject = EmailTemplate("Order {{ order_id }} shipped")
        body = EmailTemplate("<p>Hi {{ name }}</p>", autoescape=True)
        mailer.create(
            subject.render(order_id=42), ["a@example.com"], body.render(name="A&B"),
            html_body=True,
        ).send()  # fmt: skip
        msg = plain_smtp.wait_for_messages(1)[0].message
        assert msg["Subject"] == "Order 42 shipped"
        assert "A&amp;B" in msg.get_content()


def test_send_batch_without_a_relay_fails_each_message_with_no_relay() -> None:
    mailer = FluxMail("smtp", "", sender="news@example.com")
    report = BulkSender(mailer).send_batch(batch(2), progress=False)
    assert (report["sent"], report["failed"]) == (0, 2)
    assert [(i, exc.code) for i, exc in report["errors"]] == [(0, "no_relay"), (1, "no_relay")]


def test_send_batch_with_several_connections_and_a_rate(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server()
    mailer = FluxMail("smtp", server.host, port=server.port, sender="news@example.com")
    done: list[int] = []
    report = BulkSender(mailer).send_batch(
        batch(12), on_success=lambda i, m: done.append(i), progress=False,
        max_per_second=500, max_connections=3,
    )  # fmt: skip
    assert (report["sent"], report["failed"]) == (12, 0)
    assert sorted(done) == list(range(12))
    assert all(result is not None for result in report.results)
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"user{i}@example.com" for i in range(12)
    )
    assert server.connections <= 3  # (how many open depends on the threads' timing)
