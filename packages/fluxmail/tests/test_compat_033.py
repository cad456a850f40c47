"""Scripts written for FluxMail 0.3.x run unchanged: its import paths, attributes and values.

Each test is one behaviour of 0.3.x a user's code relies on (see COMPAT.md for the deliberate
differences), exercised against the real loopback SMTP server where something is sent.
"""

from __future__ import annotations

import importlib
import logging
import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import EmailInstance, EmailObject, FluxMail, FluxMailException, errors
from fluxmail.protocol.replies import Reply

PASSWORD = "s3cret-pass"


# -- import paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "fluxmail.fluxmail",
            ["FluxMail", "FluxMailException", "EmailInstance", "EmailObject", "validate_email"],
        ),
        (
            "fluxmail.utils",
            [
                "validate_email",
                "str_to_enum",
                "EMAIL_REGEX",
                "FluxMailException",
                "EmailInstance",
                "EmailObject",
            ],
        ),
        ("fluxmail._version", ["__version__", "version", "__version_tuple__", "version_tuple"]),
        ("fluxmail.testing", ["mock_smtp", "capture"]),
        ("fluxmail.fluxmail_cli", ["app", "main"]),
        ("fluxmail.backends", ["FluxMailBackend"]),
    ],
)
def test_033_import_paths(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is not None, f"{module}.{name}"


def test_the_old_paths_name_the_same_objects() -> None:
    import fluxmail
    from fluxmail import _version, backends, utils
    from fluxmail import fluxmail as old
    from fluxmail.backends.django import FluxMailBackend

    assert old.FluxMail is fluxmail.FluxMail
    assert utils.FluxMailException is fluxmail.FluxMailException
    assert utils.EmailObject is fluxmail.EmailObject
    assert _version.__version__ == fluxmail.__version__
    assert backends.FluxMailBackend is FluxMailBackend


def test_backends_package_imports_without_django() -> None:
    code = (
        "import sys; sys.modules['django'] = None\n"
        "import fluxmail.backends as b\n"
        "try:\n    b.FluxMailBackend\nexcept ImportError:\n    print('needs django')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30
    )
    assert (done.returncode, done.stdout.strip()) == (0, "needs django"), done.stderr


# -- fluxmail.utils ---------------------------------------------------------------------------


def test_validate_email_normalises_as_033_did() -> None:
    from fluxmail.utils import validate_email

    assert validate_email("  User@Example.COM.  ") == "user@example.com"
    for bad, code in [("", "no_email"), ("nope", "invalid_email"), (".a@b.com", "invalid_email")]:
        with pytest.raises(FluxMailException) as info:
            validate_email(bad)
        assert info.value.code == code
        assert isinstance(info.value, ValueError)


def test_validate_email_refuses_line_breaks() -> None:
    from fluxmail.utils import validate_email

    with pytest.raises(ValueError, match="line breaks"):
        validate_email("a@b.com\r\nBcc: victim@example.com")


def test_str_to_enum() -> None:
    from fluxmail.utils import str_to_enum

    assert str_to_enum(EmailObject, "Smtp") is EmailObject.SMTP
    assert str_to_enum(EmailObject, EmailObject.OUTLOOK) is EmailObject.OUTLOOK
    with pytest.raises(ValueError, match="Invalid value"):
        str_to_enum(EmailObject, "fax")
    with pytest.raises(TypeError):
        str_to_enum(EmailObject, 3)  # type: ignore[arg-type]


# -- constructor values 0.3.x accepted --------------------------------------------------------


def test_string_numbers_and_no_timeout_are_accepted() -> None:
    mailer = FluxMail("smtp", "smtp.example.com", port="587", max_retries="2", timeout=None)  # type: ignore[arg-type]
    assert (mailer.port, mailer.max_retries, mailer.timeout) == (587, 2, None)
    with pytest.raises(ValueError, match="port"):
        FluxMail("smtp", "smtp.example.com", port="five-eight-seven")  # type: ignore[arg-type]


def test_fractional_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXMAIL_HOST", "smtp.example.com")
    monkeypatch.setenv("FLUXMAIL_TIMEOUT", "2.5")
    assert FluxMail.from_env().timeout == 2.5


def test_unknown_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="fax") as info:
        FluxMail("fax", "smtp.example.com")
    assert info.value.code == "invalid_config"  # type: ignore[attr-defined]


def test_no_timeout_still_sends(plain_smtp: SMTPTestServer) -> None:
    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, timeout=None)
    mailer.create("Hi", ["to@example.com"], "Body", sender="from@example.com").send()
    assert plain_smtp.wait_for_messages(1)[0].message["Subject"] == "Hi"


# -- attributes -------------------------------------------------------------------------------


def test_settings_attributes() -> None:
    mailer = FluxMail(
        "smtp",
        "smtp.example.com:example.com",
        log_level="DEBUG",
        username="me@example.com",
        password=PASSWORD,
        max_retries=3,
        retry_delay=0.5,
    )
    assert mailer.host == EmailInstance("smtp.example.com", "example.com")
    assert mailer.host.relay == "smtp.example.com"
    assert (mailer.max_retries, mailer.retry_delay, mailer.log_level) == (3, 0.5, "DEBUG")
    assert mailer.password == PASSWORD
    assert mailer.is_smtp()
    assert not mailer.is_outlook()
    mailer.max_retries = 1
    assert mailer.retry.max_retries == 1
    with pytest.raises(ValueError, match="max_retries"):
        mailer.max_retries = -1


def test_password_is_never_printed(caplog: pytest.LogCaptureFixture) -> None:
    mailer = FluxMail(
        "smtp", "smtp.example.com", username="me@example.com", password=PASSWORD, log_level=10
    )
    with caplog.at_level(logging.DEBUG, logger="fluxmail"):
        mailer.create("Hi", ["to@example.com"], "Body").send(dry_run=True)
    assert PASSWORD not in repr(mailer)
    assert PASSWORD not in str(mailer)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(mailer._credentials)


def test_message_fields_after_create(tmp_path: Path) -> None:
    attachment = tmp_path / "a.txt"
    attachment.write_text("x")
    mailer = FluxMail("smtp", "smtp.example.com", sender="Ada <ada@example.com>")
    assert not mailer.is_created
    assert mailer.subject is None
    assert mailer.sender == "Ada <ada@example.com>"
    mailer.create(
        "Hello",
        ["to@example.com"],
        "<p>Hi</p>",
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to="r@example.com",
        attachments=[str(attachment)],
        html_body=True,
        plain_body="Hi",
        priority="high",
    )
    assert mailer.is_created
    assert (mailer.subject, mailer.recipients, mailer.body) == (
        "Hello",
        ["to@example.com"],
        "<p>Hi</p>",
    )
    assert (mailer.cc, mailer.bcc, mailer.reply_to) == (
        ["cc@example.com"],
        ["bcc@example.com"],
        "r@example.com",
    )
    assert mailer.input_path == mailer.attachments == [str(attachment)]
    assert (mailer.html_body, mailer.plain_body, mailer.priority) == (True, "Hi", "high")


def test_sender_is_the_resolved_from() -> None:
    # 0.3.x: after create(), sender is the From the message got.
    mailer = FluxMail("smtp", "smtp.example.com", username="login@example.com")
    assert mailer.sender is None
    mailer.create("Hi", ["to@example.com"], "Body")
    assert mailer.sender == "login@example.com"
    mailer.create("Hi", ["to@example.com"], "Body", sender="other@example.com")
    assert mailer.sender == "other@example.com"
    assert mailer.message["From"] == "other@example.com"
    # A later create() without sender= falls back again: an explicit one is per message.
    mailer.create("Hi", ["to@example.com"], "Body")
    assert mailer.sender == "login@example.com"


def test_message_is_what_is_sent(plain_smtp: SMTPTestServer) -> None:
    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port)
    assert isinstance(mailer.message, EmailMessage)
    assert mailer.message["Subject"] is None
    mailer.create(
        "Hello", ["to@example.com"], "Body", sender="from@example.com", bcc=["b@example.com"]
    )
    message = mailer.message
    assert message["Subject"] == "Hello"
    assert message["Bcc"] == "b@example.com"  # kept on the object, as 0.3.x did
    assert message is mailer.message  # parsed once per create()
    mailer.send()
    received = plain_smtp.wait_for_messages(1)[0]
    assert received.message["Message-ID"] == message["Message-ID"]
    assert received.message["Bcc"] is None  # never on the wire
    assert received.rcpt_tos == ["to@example.com", "b@example.com"]


# -- errors are also the standard exceptions --------------------------------------------------


def test_bad_arguments_are_value_errors() -> None:
    mailer = FluxMail("smtp", "smtp.example.com", sender="from@example.com")
    cases = [
        ({"subject": ""}, "invalid_params"),
        ({"priority": "urgent"}, "invalid_priority"),
        ({"recipients": ["not-an-address"]}, "invalid_email"),
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "invalid_params"),
    ]
    for change, code in cases:
        arguments = {"subject": "Hi", "recipients": ["to@example.com"], "body": "B"} | change
        with pytest.raises(FluxMailException) as info:
            mailer.create(**arguments)  # type: ignore[arg-type]
        assert isinstance(info.value, ValueError)
        assert info.value.code == code


def test_missing_attachment_is_file_not_found_and_value_error() -> None:
    mailer = FluxMail("smtp", "smtp.example.com", sender="from@example.com")
    with pytest.raises(FileNotFoundError) as info:
        mailer.create("Hi", ["to@example.com"], "B", attachments=["/nonexistent/file.pdf"])
    assert isinstance(info.value, ValueError)
    assert info.value.code == "attachment_not_found"  # type: ignore[attr-defined]


def test_connection_refused_is_a_connection_error() -> None:
    mailer = FluxMail("smtp", "127.0.0.1", port=closed_port(), sender="from@example.com")
    mailer.create("Hi", ["to@example.com"], "B")
    with pytest.raises(ConnectionError) as info:
        mailer.send()
    assert isinstance(info.value, FluxMailException)
    assert info.value.code == "send_failed"
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert info.value.__cause__.code == "connection_refused"  # type: ignore[attr-defined]


def test_refused_recipients_are_smtplib_recipients_refused(
    smtp_server: SMTPServerFactory,
) -> None:
    server = smtp_server(faults=Faults(refuse_recipients={"no@example.com": (550, "5.1.1 No")}))
    mailer = FluxMail("smtp", server.host, port=server.port, sender="from@example.com")
    mailer.create("Hi", ["no@example.com"], "B")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        mailer.send()
    assert info.value.recipients == {"no@example.com": (550, b"5.1.1 No")}
    assert info.value.code == "send_failed"  # type: ignore[attr-defined]
    cause = info.value.__cause__
    assert isinstance(cause, errors.RecipientsRefused)
    assert isinstance(cause, smtplib.SMTPRecipientsRefused)


def test_permanent_reply_is_smtplib_response_exception(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(faults=Faults(permanent_failure=True))
    mailer = FluxMail("smtp", server.host, port=server.port, sender="from@example.com")
    with pytest.raises(smtplib.SMTPResponseException) as info:
        mailer.create("Hi", ["to@example.com"], "B").send()
    assert (info.value.smtp_code, info.value.smtp_error) == (554, b"5.7.1 Message rejected")
    assert isinstance(info.value.__cause__, smtplib.SMTPDataError)


def test_wrong_password_is_smtp_authentication_error(smtp_server: SMTPServerFactory) -> None:
    server = smtp_server(tls="starttls", auth=True)
    from flux_testkit.certs import client_ssl_context

    mailer = FluxMail(
        "smtp",
        server.host,
        port=server.port,
        use_tls=True,
        ssl_context=client_ssl_context(),
        username="user@example.com",
        password="wrong",
    )
    with pytest.raises(FluxMailException) as info:
        mailer.test_connection()
    cause = info.value.__cause__
    assert isinstance(cause, smtplib.SMTPAuthenticationError)
    assert cause.smtp_code == 535
    assert cause.code == "auth_failed"  # type: ignore[attr-defined]
    assert isinstance(info.value, ConnectionError)  # connection_failed, from test_connection


def test_starttls_not_offered_is_smtp_not_supported(plain_smtp: SMTPTestServer) -> None:
    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, use_tls=True)
    with pytest.raises(FluxMailException) as info:
        mailer.test_connection()
    cause = info.value.__cause__
    assert isinstance(cause, smtplib.SMTPNotSupportedError)
    assert "STARTTLS extension not supported by server." in str(cause)


def test_error_classes_by_code_and_command() -> None:
    lost = errors.SMTPConnectError("gone", "connection_lost")
    assert isinstance(lost, smtplib.SMTPServerDisconnected)
    assert isinstance(lost, ConnectionError)
    assert isinstance(errors.SMTPTimeoutError("slow", "timeout"), TimeoutError)
    sender = errors.SMTPReplyError("no", Reply(553, ("bad sender",)), "MAIL")
    assert isinstance(sender, smtplib.SMTPSenderRefused)
    assert (sender.smtp_code, sender.code, sender.transient) == (553, "smtp_permanent", False)
    greeting = errors.SMTPReplyError("busy", Reply(421, ("busy",)), "greeting")
    assert isinstance(greeting, smtplib.SMTPConnectError)
    assert greeting.transient
    # The tree's own classes are unchanged for code that catches them.
    assert isinstance(FluxMailException("x", "invalid_params"), errors.InvalidArgumentError)
    assert type(FluxMailException("x")) is FluxMailException
    assert str(FluxMailException("oops", "x")) == "oops"


# -- mock_smtp --------------------------------------------------------------------------------


def test_mock_smtp_records_the_session() -> None:
    from fluxmail.testing import mock_smtp

    with mock_smtp() as smtp:
        mailer = FluxMail("smtp", "smtp.example.com", use_tls=True, username="u@example.com")
        mailer.password = PASSWORD
        with mailer:
            mailer.create("A", ["a@example.com"], "1").send()
            mailer.create("B", ["b@example.com"], "2").send()
    smtp.starttls.assert_called_once()
    smtp.login.assert_called_once_with("u@example.com", PASSWORD)
    assert [c.args[0]["Subject"] for c in smtp.send_message.call_args_list] == ["A", "B"]
    smtp.quit.assert_called_once()


def test_mock_smtp_failures_become_fluxmail_errors() -> None:
    from fluxmail.testing import mock_smtp

    mailer = FluxMail("smtp", "smtp.example.com", sender="f@example.com", max_retries=2)
    mailer.retry_delay = 0
    with mock_smtp() as smtp:
        smtp.send_message.side_effect = [ConnectionResetError("reset"), None]
        assert mailer.create("Hi", ["a@example.com"], "B").send().startswith("Email sent")
        assert smtp.send_message.call_count == 2  # the transient failure was retried
        smtp.send_message.side_effect = smtplib.SMTPRecipientsRefused(
            {"a@example.com": (550, b"no")}
        )
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            mailer.send()
        assert smtp.send_message.call_count == 3  # a permanent refusal is not retried


async def test_mock_smtp_covers_async_sends() -> None:
    from fluxmail.testing import mock_smtp

    with mock_smtp() as smtp:
        mailer = FluxMail("smtp", "smtp.example.com", sender="f@example.com")
        await mailer.create("Async", ["a@example.com"], "B").send_async()
    assert smtp.send_message.call_args.args[0]["Subject"] == "Async"


def test_mock_smtp_covers_bulk_and_pools() -> None:
    from fluxmail import BulkSender, MessageTemplate, SendResult
    from fluxmail.testing import mock_smtp

    mailer = FluxMail("smtp", "smtp.example.com", sender="f@example.com")
    template = MessageTemplate(sender="f@example.com", subject="Hi {{ n }}", text="B")
    with mock_smtp() as smtp:
        report = BulkSender(mailer).send_batch(
            [
                {"subject": f"Bulk {n}", "recipients": ["a@example.com"], "body": "B"}
                for n in (1, 2)
            ],
            progress=False,
        )
        with mailer.pool(max_connections=1) as pool:
            outcomes = pool.send_many(template.render("b@example.com", n=n) for n in (3, 4))
    assert (report["sent"], report["failed"]) == (2, 0)
    assert all(isinstance(outcome, SendResult) for outcome in outcomes)
    subjects = [c.args[0]["Subject"] for c in smtp.send_message.call_args_list]
    assert subjects == ["Bulk 1", "Bulk 2", "Hi 3", "Hi 4"]


def test_patching_033s_transport_names(plain_smtp: SMTPTestServer) -> None:
    # Tests written for 0.3.x patch fluxmail._transport.smtplib.SMTP / SMTP_SSL themselves.
    from unittest.mock import MagicMock, patch

    conn = MagicMock()
    cls = MagicMock(return_value=conn)
    mailer = FluxMail("smtp", "smtp.example.com", port=2525, sender="f@example.com")
    with patch("fluxmail._transport.smtplib.SMTP", cls), mailer:
        mailer.create("A", ["a@example.com"], "1").send()
        mailer.create("B", ["a@example.com"], "2").send()
    cls.assert_called_once_with("smtp.example.com", 2525, timeout=30.0)
    assert conn.send_message.call_count == 2
    conn.quit.assert_called_once()
    with patch("fluxmail._transport.smtplib.SMTP_SSL") as ssl_cls:
        FluxMail("smtp", "smtp.example.com", use_ssl=True, sender="f@example.com").create(
            "C", ["a@example.com"], "3"
        ).send()
    assert ssl_cls.call_args.args == ("smtp.example.com", 25)
    ssl_cls.return_value.send_message.assert_called_once()
    # Restored: the real protocol core is back.
    FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com").create(
        "D", ["a@example.com"], "4"
    ).send()
    assert [m.message["Subject"] for m in plain_smtp.wait_for_messages(1)] == ["D"]


async def test_patching_033s_aiosmtplib_name() -> None:
    from unittest.mock import AsyncMock, MagicMock, patch

    smtp = AsyncMock()
    smtp.__aenter__.return_value = smtp
    with patch("fluxmail._transport.aiosmtplib.SMTP", MagicMock(return_value=smtp)) as cls:
        mailer = FluxMail("smtp", "smtp.example.com", use_tls=True, sender="f@example.com")
        await mailer.create("Async", ["a@example.com"], "B").send_async()
    assert cls.call_args.kwargs["hostname"] == "smtp.example.com"
    smtp.starttls.assert_awaited_once()
    assert smtp.send_message.await_args.args[0]["Subject"] == "Async"
    smtp.__aexit__.assert_awaited_once()


def test_mock_smtp_connects_to_nothing(plain_smtp: SMTPTestServer) -> None:
    from fluxmail.testing import mock_smtp

    with mock_smtp():
        FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com").create(
            "Hi", ["a@example.com"], "B"
        ).send()
    assert plain_smtp.connections == 0
    # Outside the block, the real connection is back.
    FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com").create(
        "Hi", ["a@example.com"], "B"
    ).send()
    assert plain_smtp.connections == 1


# -- logging ----------------------------------------------------------------------------------


def test_warnings_are_silent_without_logging_configured(smtp_server: SMTPServerFactory) -> None:
    # A partial refusal logs a warning; with logging unconfigured nothing may reach stderr.
    server = smtp_server(faults=Faults(refuse_recipients={"no@example.com": (550, "5.1.1 No")}))
    code = (
        "from fluxmail import FluxMail\n"
        f"m = FluxMail('smtp', '127.0.0.1', port={server.port}, sender='f@example.com')\n"
        "m.create('Hi', ['to@example.com', 'no@example.com'], 'B').send()\n"
        "assert list(m.last_result.refused) == ['no@example.com']\n"
        "import logging; logging.basicConfig()\n"
        "m.create('Hi', ['to@example.com', 'no@example.com'], 'B').send()\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    # Only the second send, after the application configured logging, is reported.
    assert done.stderr.count("Relay refused 1 of 2 recipients") == 1


# -- BulkSender -------------------------------------------------------------------------------


def _bulk(n: int, **extra: object) -> list[dict[str, object]]:
    return [
        {"subject": f"Bulk {i}", "recipients": [f"r{i}@example.com"], "body": "B", **extra}
        for i in range(n)
    ]


def test_batch_report_is_033s_dict_with_results_beside_it(plain_smtp: SMTPTestServer) -> None:
    from fluxmail import BulkSender, SendResult

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    report = BulkSender(mailer).send_batch(_bulk(2), progress=False)
    # 0.3.x's users compare the report with its four keys written out.
    assert report == {"sent": 2, "failed": 0, "total": 2, "errors": []}
    assert sorted(report) == ["errors", "failed", "sent", "total"]
    assert [type(r) for r in report.results] == [SendResult, SendResult]
    assert report.results[1] is not None
    assert report.results[1].accepted == ("r1@example.com",)
    assert len(plain_smtp.wait_for_messages(2)) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_on_error_takes_033s_two_arguments_or_three(
    plain_smtp: SMTPTestServer, mode: str
) -> None:
    from fluxmail import BulkSender

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    messages = [*_bulk(1), {"subject": "Bad", "recipients": ["not-an-address"], "body": "B"}]
    two: list[tuple[int, str | None]] = []
    three: list[tuple[int, str, str | None]] = []

    def on_error_033(index: int, exc: FluxMailException) -> None:
        two.append((index, exc.code))

    def on_error_new(index: int, message: dict[str, object], exc: FluxMailException) -> None:
        three.append((index, str(message["subject"]), exc.code))

    for on_error in (on_error_033, on_error_new):
        sender = BulkSender(mailer)
        if mode == "sync":
            sender.send_batch(messages, on_error=on_error, progress=False)
        else:
            await sender.send_batch_async(messages, on_error=on_error, progress=False)
    assert two == [(1, "invalid_email")]
    assert three == [(1, "Bad", "invalid_email")]
    assert len(plain_smtp.wait_for_messages(2)) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_message_dict_create_cannot_take_fails_alone(
    plain_smtp: SMTPTestServer, mode: str
) -> None:
    from fluxmail import BulkSender

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    bad: list[object] = [{"subject": "Typo", "recipients": ["a@example.com"], "bdy": "B"}, None]
    messages = [_bulk(1)[0], *bad, _bulk(2)[1]]
    sender = BulkSender(mailer)
    if mode == "sync":
        report = sender.send_batch(messages, progress=False)  # type: ignore[arg-type]
    else:
        report = await sender.send_batch_async(messages, progress=False)  # type: ignore[arg-type]
    assert (report["sent"], report["failed"], report["total"]) == (2, 2, 4)
    assert [index for index, _ in report["errors"]] == [1, 2]
    for _, exc in report["errors"]:
        assert exc.code == "send_failed"
        assert isinstance(exc.__cause__, TypeError)
    assert "bdy" in str(report["errors"][0][1])
    assert [m.message["Subject"] for m in plain_smtp.wait_for_messages(2)] == ["Bulk 0", "Bulk 1"]


@pytest.mark.parametrize("rate", [-1, float("nan"), "10"])
async def test_bad_max_per_second_is_invalid_config_even_for_no_messages(
    plain_smtp: SMTPTestServer, rate: object
) -> None:
    from fluxmail import BulkSender

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    with pytest.raises(FluxMailException) as async_error:
        await BulkSender(mailer).send_batch_async([], progress=False, max_per_second=rate)  # type: ignore[arg-type]
    with pytest.raises(FluxMailException) as sync_error:
        BulkSender(mailer).send_batch(_bulk(1), progress=False, max_per_second=rate)  # type: ignore[arg-type]
    assert async_error.value.code == sync_error.value.code == "invalid_config"
    assert "max_per_second" in str(async_error.value)
    assert plain_smtp.connections == 0


# -- the mailer's _transport: the one path of its SMTP attempts --------------------------------


def test_every_attempt_goes_through_the_mailer_transport(plain_smtp: SMTPTestServer) -> None:
    from unittest import mock

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    transport = mailer._transport
    with (
        mock.patch.object(transport, "send", wraps=transport.send) as send,
        mock.patch.object(transport, "_make_connection", wraps=transport._make_connection) as make,
        mailer,
    ):
        mailer.create("One", ["a@example.com"], "1").send()
        mailer.create("Two", ["b@example.com"], "2").send()
    assert send.call_count == 2
    envelope, data = send.call_args.args[0]
    assert envelope.recipients == ("b@example.com",)
    assert b"Subject: Two" in data
    make.assert_called_once()  # one held connection for both
    assert [m.message["Subject"] for m in plain_smtp.wait_for_messages(2)] == ["One", "Two"]
    assert plain_smtp.connections == 1


def test_a_replaced_transport_s_smtplib_errors_are_fluxmail_s() -> None:
    from unittest import mock

    mailer = FluxMail("smtp", "smtp.example.com", sender="f@example.com", max_retries=2)
    mailer.retry_delay = 0
    mailer.create("Hi", ["a@example.com"], "B")
    cases: list[tuple[Exception, int, type[BaseException]]] = [
        # transient (a broken connection, a 4xx reply): retried
        (smtplib.SMTPServerDisconnected("gone"), 3, ConnectionError),
        (ConnectionResetError("reset"), 3, smtplib.SMTPServerDisconnected),
        (smtplib.SMTPResponseException(451, b"later"), 3, smtplib.SMTPResponseException),
        (smtplib.SMTPResponseException(550, b"no"), 1, smtplib.SMTPResponseException),
        (smtplib.SMTPException("no suitable mechanism"), 1, smtplib.SMTPException),
    ]
    for raised, calls, standard in cases:
        with (
            mock.patch.object(mailer._transport, "send", side_effect=raised) as send,
            pytest.raises(FluxMailException) as error,
        ):
            mailer.send()
        assert send.call_count == calls, raised
        assert error.value.code == "send_failed"
        assert isinstance(error.value, standard)
        assert isinstance(error.value, smtplib.SMTPException)
        assert error.value.__cause__ is not None
        assert error.value.__cause__.__cause__ is raised


async def test_a_replaced_transport_that_returns_nothing_sent_to_everyone() -> None:
    from unittest import mock

    mailer = FluxMail("smtp", "smtp.example.com", sender="f@example.com")
    mailer.create("Hi", ["a@example.com"], "B", cc=["c@example.com"])
    with mock.patch.object(mailer._transport, "send", return_value=None):
        assert "sent successfully" in mailer.send()
    assert mailer.last_result is not None
    assert mailer.last_result.accepted == ("a@example.com", "c@example.com")
    with mock.patch.object(mailer._transport, "send_async", new_callable=mock.AsyncMock) as send:
        assert "sent successfully" in await mailer.send_async()
    assert send.await_args.args[0][0].recipients == ("a@example.com", "c@example.com")


def test_test_connection_opens_through_the_transport(plain_smtp: SMTPTestServer) -> None:
    from unittest import mock

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    report = mailer.test_connection()
    assert (report["ok"], report["port"], report["tls"]) == (True, plain_smtp.port, False)
    assert plain_smtp.connections == 1
    assert [c.upper() for c in plain_smtp.commands][-1] == "QUIT"
    with (
        mock.patch.object(mailer._transport, "_make_connection", side_effect=OSError("down")),
        pytest.raises(FluxMailException) as error,
    ):
        mailer.test_connection()
    assert error.value.code == "connection_failed"
    assert "down" in str(error.value)


async def test_async_attempts_go_through_the_transport(plain_smtp: SMTPTestServer) -> None:
    from unittest import mock

    mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, sender="f@example.com")
    transport = mailer._transport
    with mock.patch.object(transport, "send_async", wraps=transport.send_async) as send:
        async with mailer:
            await mailer.create("A1", ["a@example.com"], "1").send_async()
            await mailer.create("A2", ["a@example.com"], "2").send_async()
    assert send.await_count == 2
    assert [m.message["Subject"] for m in plain_smtp.wait_for_messages(2)] == ["A1", "A2"]
    assert plain_smtp.connections == 1
