"""Constructor checks, host forms, EmailObject, from_env() and create() validation codes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flux_testkit.smtpd import SMTPTestServer
from fluxmail import EmailInstance, EmailObject, FluxMail, FluxMailException


def code_of(call, *args, **kwargs) -> str | None:
    with pytest.raises(FluxMailException) as info:
        call(*args, **kwargs)
    return info.value.code


class TestConstructor:
    def test_tls_and_ssl_together_checked_first(self) -> None:
        # Checked before anything else, even a nonsense object type.
        assert code_of(FluxMail, "carrier-pigeon", "h", use_tls=True, use_ssl=True) == (
            "invalid_config"
        )

    def test_logger_must_be_a_logger(self) -> None:
        assert code_of(FluxMail, "smtp", "h", logger="not a logger") == "invalid_config"
        mine = logging.getLogger("my.app")
        assert FluxMail("smtp", "h", logger=mine).logger is mine

    def test_log_level_is_per_mailer(self, caplog: pytest.LogCaptureFixture) -> None:
        root = logging.getLogger("fluxmail")
        caplog.set_level(logging.DEBUG, logger="fluxmail")
        quiet = FluxMail("smtp", "h")  # default WARNING: this mailer's debug lines are dropped
        chatty = FluxMail("smtp", "h", log_level="debug")
        assert root.level == logging.DEBUG  # the application's setting survives both
        quiet.logger.debug("quiet-debug")
        chatty.logger.debug("chatty-debug")
        assert "chatty-debug" in caplog.text
        assert "quiet-debug" not in caplog.text
        assert code_of(FluxMail, "smtp", "h", log_level="LOUD") == "invalid_config"

    @pytest.mark.parametrize("value", ["smtp", "SMTP", "Smtp", EmailObject.SMTP])
    def test_object_type_forms(self, value: object) -> None:
        assert FluxMail("smtp", "h").object_type is EmailObject(value)
        assert EmailObject(value) is EmailObject.SMTP

    def test_unknown_object_type(self) -> None:
        assert code_of(FluxMail, "fax", "h") == "invalid_config"

    def test_email_object_and_instance_shapes(self) -> None:
        assert EmailObject.SMTP.value == "smtp"
        assert EmailObject("outlook") is EmailObject.OUTLOOK
        assert EmailObject("OUTLOOK") is EmailObject.OUTLOOK
        assert EmailInstance("relay.example.com") == ("relay.example.com", "")
        assert EmailInstance("r", "d").domain == "d"

    @pytest.mark.parametrize(
        ("host", "relay", "domain", "port"),
        [
            ("smtp.gmail.com", "smtp.gmail.com", "", 25),
            ("smtp.gmail.com:gmail.com", "smtp.gmail.com", "gmail.com", 25),
            ("smtp.example.com:587", "smtp.example.com", "", 587),  # fixed: a port, not a domain
            (
                EmailInstance("smtp.example.com", "example.com"),
                "smtp.example.com",
                "example.com",
                25,
            ),
        ],
    )
    def test_host_forms(self, host: object, relay: str, domain: str, port: int) -> None:
        mailer = FluxMail("smtp", host)
        assert (mailer.relay, mailer.domain, mailer.port) == (relay, domain, port)

    @pytest.mark.parametrize("host", [None, 25, ["smtp.example.com"], ("a", "b"), b"host"])
    def test_other_host_types_are_type_errors(self, host: object) -> None:
        with pytest.raises(TypeError):
            FluxMail("smtp", host)

    def test_domain_names_message_ids(self, plain_smtp: SMTPTestServer) -> None:
        instance = EmailInstance(plain_smtp.host, "mail.example.org")
        mailer = FluxMail("smtp", instance, port=plain_smtp.port, sender="a@example.com")
        mailer.create("x", ["b@example.com"], "x").send()
        assert (
            plain_smtp.wait_for_messages(1)[0].message["Message-ID"].endswith("@mail.example.org>")
        )

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"port": 0},
            {"port": 70000},
            {"port": "twenty-five"},  # "25" is read as 25, as 0.3.x did
            {"timeout": -1},
            {"timeout": 0},
            {"timeout": float("nan")},
            {"retry_delay": float("inf")},
            {"max_retries": -1},
        ],
    )
    def test_bad_numbers(self, kwargs: dict[str, object]) -> None:
        assert code_of(FluxMail, "smtp", "h", **kwargs) == "invalid_config"

    def test_outlook_elsewhere_than_windows(self) -> None:
        with pytest.raises(FluxMailException) as info:
            FluxMail("outlook", "")
        assert info.value.code == "invalid_config"
        assert "Windows" in str(info.value)

    def test_exception_shape(self) -> None:
        exc = FluxMailException("boom", code="send_failed")
        assert (str(exc), exc.code, exc.message) == ("boom", "send_failed", "boom")
        assert FluxMailException("plain").code is None


class TestSenderResolution:
    def test_explicit_sender_wins(self, plain_smtp: SMTPTestServer) -> None:
        mailer = FluxMail(
            "smtp", plain_smtp.host, port=plain_smtp.port, username="user@example.com",
            sender="ctor@example.com",
        )  # fmt: skip
        mailer.create("x", ["to@example.com"], "x", sender="explicit@example.com").send()
        mailer.create("x", ["to@example.com"], "x").send()
        first, second = plain_smtp.wait_for_messages(2)
        assert first.mail_from == "explicit@example.com"
        assert second.mail_from == "ctor@example.com"

    def test_username_when_it_is_an_address(self, plain_smtp: SMTPTestServer) -> None:
        mailer = FluxMail("smtp", plain_smtp.host, port=plain_smtp.port, username="me@example.com")
        mailer.create("x", ["to@example.com"], "x").send()
        assert plain_smtp.wait_for_messages(1)[0].mail_from == "me@example.com"

    def test_sender_required(self) -> None:
        mailer = FluxMail("smtp", "h", username="apikey", password="pw")
        assert code_of(mailer.create, "x", ["to@example.com"], "x") == "sender_required"


class TestCreateValidation:
    @pytest.fixture
    def mailer(self) -> FluxMail:
        return FluxMail("smtp", "smtp.example.com", sender="a@example.com")

    @pytest.mark.parametrize(
        ("kwargs", "code"),
        [
            ({"subject": ""}, "invalid_params"),
            ({"subject": "   "}, "invalid_params"),
            ({"recipients": []}, "invalid_params"),
            ({"recipients": "to@example.com"}, "invalid_params"),
            ({"cc": "cc@example.com"}, "invalid_params"),
            ({"bcc": "bcc@example.com"}, "invalid_params"),
            ({"attachments": "file.txt"}, "invalid_params"),
            ({"inline_images": {"a": "x.png"}}, "invalid_params"),  # without html_body
            ({"inline_images": ["x.png"], "html_body": True}, "invalid_params"),
            ({"priority": "urgent"}, "invalid_priority"),
            ({"recipients": [""]}, "no_email"),
            ({"cc": ["  "]}, "no_email"),
            ({"recipients": ["not-an-email"]}, "invalid_email"),
            ({"recipients": ["a@"]}, "invalid_email"),
            ({"recipients": ["@b.com"]}, "invalid_email"),
            ({"recipients": ["a b@c.com"]}, "invalid_email"),
            ({"reply_to": "nope"}, "invalid_email"),
            ({"sender": "bad sender"}, "invalid_email"),
            ({"attachments": ["/no/such/file.pdf"]}, "attachment_not_found"),
            ({"unsubscribe_url": "http://example.com/u"}, "invalid_params"),
        ],
    )
    def test_codes(self, mailer: FluxMail, kwargs: dict[str, object], code: str) -> None:
        args: dict[str, object] = {"subject": "s", "recipients": ["to@example.com"], "body": "b"}
        assert code_of(mailer.create, **{**args, **kwargs}) == code

    @pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
    def test_unreadable_attachment(self, mailer: FluxMail) -> None:
        # A regular file whose read fails with EIO, even for root (chmod would not stop root).
        assert (
            code_of(mailer.create, "s", ["t@example.com"], "b", attachments=["/proc/self/mem"])
            == "read_error"
        )

    def test_directory_is_not_an_attachment(self, mailer: FluxMail, tmp_path: Path) -> None:
        assert (
            code_of(mailer.create, "s", ["t@example.com"], "b", attachments=[str(tmp_path)])
            == "attachment_not_found"
        )

    def test_failed_create_leaves_nothing_to_send(self, mailer: FluxMail) -> None:
        mailer.create("ok", ["to@example.com"], "b")
        with pytest.raises(FluxMailException):
            mailer.create("", ["to@example.com"], "b")
        assert code_of(mailer.send) == "not_created"  # never the previous message by mistake


class TestFromEnv:
    def test_all_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in {
            "FLUXMAIL_TYPE": "SMTP",
            "FLUXMAIL_HOST": "smtp.example.com:example.com",
            "FLUXMAIL_PORT": "587",
            "FLUXMAIL_USERNAME": "me@example.com",
            "FLUXMAIL_PASSWORD": "pw",
            "FLUXMAIL_TLS": "Yes",
            "FLUXMAIL_SSL": "no",
            "FLUXMAIL_TIMEOUT": "12",
            "FLUXMAIL_MAX_RETRIES": "3",
            "FLUXMAIL_RETRY_DELAY": "0.25",
        }.items():
            monkeypatch.setenv(name, value)
        mailer = FluxMail.from_env()
        assert (mailer.relay, mailer.domain, mailer.port) == (
            "smtp.example.com",
            "example.com",
            587,
        )
        assert mailer.username == "me@example.com"
        assert (mailer.use_tls, mailer.use_ssl) == (True, False)
        assert mailer.timeout == 12
        assert (mailer.retry.max_retries, mailer.retry.delay) == (3, 0.25)

    def test_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _clear(monkeypatch)
        monkeypatch.setenv("FLUXMAIL_HOST", "relay.example.com")
        mailer = FluxMail.from_env()
        assert mailer.object_type is EmailObject.SMTP
        assert (mailer.port, mailer.use_tls, mailer.use_ssl, mailer.timeout) == (
            25,
            False,
            False,
            30,
        )
        assert (mailer.retry.max_retries, mailer.retry.delay) == (0, 1.0)

    @pytest.mark.parametrize("truthy", ["true", "TRUE", "1", "yes", "YeS"])
    def test_flags(self, monkeypatch: pytest.MonkeyPatch, truthy: str) -> None:
        _clear(monkeypatch)
        monkeypatch.setenv("FLUXMAIL_HOST", "h")
        monkeypatch.setenv("FLUXMAIL_SSL", truthy)
        assert FluxMail.from_env().use_ssl

    def test_missing_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _clear(monkeypatch)
        assert code_of(FluxMail.from_env) == "invalid_config"

    @pytest.mark.parametrize(
        ("name", "value"),
        [("FLUXMAIL_PORT", "abc"), ("FLUXMAIL_TIMEOUT", "1.5x"), ("FLUXMAIL_MAX_RETRIES", "two"),
         ("FLUXMAIL_RETRY_DELAY", "soon")],
    )  # fmt: skip
    def test_malformed_numbers_name_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        _clear(monkeypatch)
        monkeypatch.setenv("FLUXMAIL_HOST", "h")
        monkeypatch.setenv(name, value)
        with pytest.raises(FluxMailException) as info:
            FluxMail.from_env()
        assert info.value.code == "invalid_config"
        assert name in str(info.value)
        # Not int()'s bare ValueError leaking out (0.3.3's defect): FluxMail's own error, which
        # is a ValueError as every bad-argument error is, with the code and no leaked context.
        assert isinstance(info.value, ValueError)
        assert info.value.__suppress_context__

    def test_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _clear(monkeypatch)
        monkeypatch.setenv("FLUXMAIL_HOST", "h")
        assert FluxMail.from_env(port=2525, sender="x@example.com").port == 2525


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FLUXMAIL_"):
            monkeypatch.delenv(name)
