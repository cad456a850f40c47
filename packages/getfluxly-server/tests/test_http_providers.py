"""The HTTP API connectors (SES, Resend, Mailgun, SMTP2GO, Postmark, SendGrid) against the
local provider fakes in :mod:`flux_testkit.provider_fakes`.

The first half runs every contract check for each provider (parametrized ``case``): verify,
send, error mapping, secrecy of the keys, the api_url rule, the network guard, and the path
through the domain layer with an API body. The second half pins each provider's documented
payload and its provider-specific answers, then the shared helpers and AWS SigV4 vectors.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.header import decode_header, make_header
from typing import Any

import httpx
import pytest

from flux_testkit.netguard import unresolvable_names
from flux_testkit.provider_fakes import (
    FakeProviderServer,
    MailgunFake,
    PostmarkFake,
    ResendFake,
    SendGridFake,
    SESFake,
    SMTP2GOFake,
)
from getfluxly_server.delivery.base import (
    BuildContext,
    DeliveryError,
    Outcome,
    OutgoingEmail,
    ProviderClient,
)
from getfluxly_server.delivery.http import classify_status, mailbox, parse_api_url
from getfluxly_server.delivery.netguard import NetworkPolicy
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.delivery.ses import signature_v4
from getfluxly_server.domain import providers as domain
from getfluxly_server.domain.errors import DomainError

CONTEXT = BuildContext(timeout=5)

EMAIL = OutgoingEmail(
    from_email="hello@example.com",
    from_name="Acme, Inc.",
    to=("ann@example.org", "bob@example.org"),
    subject="Welcome aboard",
    text="Hello Ann and Bob",
    html="<p>Hello <b>Ann</b> and Bob</p>",
    reply_to="support@example.com",
    headers={"X-Campaign": "welcome-1", "List-Unsubscribe": "<https://example.com/u/1>"},
)


@dataclass(frozen=True)
class Case:
    """One provider kind and how to reach its fake."""

    name: str
    fake: Callable[[], FakeProviderServer]
    #: The kind's settings (API-body field -> value) that reach ``fake``.
    settings: Callable[[Any], dict[str, str]]
    #: The secret field the tests tamper with.
    secret: str
    #: The status the provider documents for a refused message.
    reject_status: int


CASES = [
    Case("postmark", PostmarkFake, lambda f: {"server_token": f.server_token}, "server_token", 422),
    Case("sendgrid", SendGridFake, lambda f: {"api_key": f.api_key}, "api_key", 400),
    Case(
        "mailgun",
        MailgunFake,
        lambda f: {"api_key": f.api_key, "domain": f.domain},
        "api_key",
        400,
    ),
    Case("resend", ResendFake, lambda f: {"api_key": f.api_key}, "api_key", 422),
    Case("smtp2go", SMTP2GOFake, lambda f: {"api_key": f.api_key}, "api_key", 400),
    Case(
        "ses",
        SESFake,
        lambda f: {
            "access_key_id": f.access_key_id,
            "secret_access_key": f.secret_access_key,
            "region": f.region,
        },
        "secret_access_key",
        400,
    ),
]


def build(
    case: Case,
    fake: FakeProviderServer,
    changes: Mapping[str, str] | None = None,
    *,
    context: BuildContext = CONTEXT,
) -> ProviderClient:
    """The connector for ``case`` pointed at ``fake`` (``changes`` override settings)."""
    kind = PROVIDERS[case.name]
    settings = {**case.settings(fake), "api_url": fake.url, **(changes or {})}
    secrets = {k: v for k, v in settings.items() if k in kind.secret_fields}
    config = {k: v for k, v in settings.items() if k not in kind.secret_fields}
    return kind.build(config, secrets, context)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    param: Case = request.param
    return param


@pytest.fixture
def fake(case: Case) -> Iterator[FakeProviderServer]:
    with case.fake() as server:
        yield server


def error_of(call: Callable[[], object]) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        call()
    return caught.value


# -- every provider ---------------------------------------------------------------------------


def test_verify_succeeds_with_the_right_credentials(case: Case, fake: FakeProviderServer) -> None:
    assert build(case, fake).verify() == []
    assert fake.problems == []
    assert fake.messages == []  # verification never sends


def test_verify_maps_wrong_credentials_to_auth_failed(case: Case, fake: FakeProviderServer) -> None:
    wrong = "wrong-" + case.settings(fake)[case.secret]
    error = error_of(build(case, fake, {case.secret: wrong}).verify)
    assert error.code == "auth_failed"
    assert not error.transient
    assert wrong not in error.detail


def test_send_delivers_and_returns_the_provider_id(case: Case, fake: FakeProviderServer) -> None:
    result = build(case, fake).send(EMAIL)
    assert fake.problems == []
    [message] = fake.messages
    assert message.path == fake.requests[-1].path
    assert result.provider_message_id
    assert result.reply.startswith(("200", "202"))
    assert isinstance(result.elapsed_ms, int)
    # elapsed_ms is the provider's time: an answer held back 250 ms measures at least that.
    fake.slow_next(0.25)
    slow = build(case, fake).send(EMAIL)
    assert slow.elapsed_ms >= 250


def test_send_with_wrong_credentials_is_auth_failed(case: Case, fake: FakeProviderServer) -> None:
    wrong = "wrong-" + case.settings(fake)[case.secret]
    error = error_of(lambda: build(case, fake, {case.secret: wrong}).send(EMAIL))
    assert (error.code, error.transient) == ("auth_failed", False)
    assert fake.messages == []


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient_deferred(
    case: Case, fake: FakeProviderServer, status: int
) -> None:
    fake.fail_next(status)
    error = error_of(lambda: build(case, fake).send(EMAIL))
    assert (error.code, error.transient) == ("deferred", True)
    assert f"HTTP {status}" in error.detail


def test_a_refused_message_is_rejected(case: Case, fake: FakeProviderServer) -> None:
    fake.fail_next(case.reject_status, message="Recipient refused by policy 42")
    error = error_of(lambda: build(case, fake).send(EMAIL))
    assert (error.code, error.transient, error.outcome) == ("rejected", False, Outcome.PERMANENT)
    assert f"HTTP {case.reject_status}" in error.detail
    # Issue 10: api_url may point at any service, so its answers are never echoed back.
    assert "policy 42" not in error.detail


def test_an_unreachable_api_is_connection_refused(case: Case, fake: FakeProviderServer) -> None:
    client = build(case, fake, {"api_url": f"http://127.0.0.1:{unused_port()}"})
    for call in (client.verify, lambda: client.send(EMAIL)):
        error = error_of(call)
        assert (error.code, error.transient) == ("connection_refused", True)


def test_a_slow_api_is_a_timeout(case: Case, fake: FakeProviderServer) -> None:
    """No answer in time: for a verification a transient timeout; for a send, the request
    went out, so the provider may have taken the message: UNKNOWN, never resent by itself."""
    client = build(case, fake, context=BuildContext(timeout=0.3))
    fake.slow_next(30)
    checking = error_of(client.verify)
    assert (checking.code, checking.outcome) == ("timeout", Outcome.TRANSIENT)
    fake.slow_next(30)
    sending = error_of(lambda: client.send(EMAIL))
    assert (sending.code, sending.transient, sending.outcome) == ("timeout", False, Outcome.UNKNOWN)
    assert "0.3s" in sending.detail
    assert "not sent again automatically" in sending.detail


def test_secrets_never_reach_details_or_reprs(case: Case, fake: FakeProviderServer) -> None:
    secret = case.settings(fake)[case.secret]
    client = build(case, fake)
    # A provider that echoes the key back in an error (some echo the offending field).
    fake.fail_next(400, message=f"invalid value {secret} for field")
    echoed = error_of(lambda: client.send(EMAIL))
    # Echoed where the detail's length limit would cut through it.
    fake.fail_next(400, message="x" * 280 + secret)
    cut = error_of(lambda: client.send(EMAIL))
    assert secret[:8] not in cut.detail
    # times=2: Mailgun's verification retries a refused key once (the sending-key probe).
    fake.fail_next(401, f"Forbidden: {secret}", times=2)
    unauthorized = error_of(client.verify)
    unreachable = error_of(
        build(case, fake, {"api_url": f"http://127.0.0.1:{unused_port()}"}).verify
    )
    for error in (echoed, unauthorized, unreachable):
        for text in (error.detail, str(error), repr(error), repr(error.args)):
            assert secret not in text
            assert "invalid value" not in text  # nor anything else the provider said
    assert secret not in repr(client)


@pytest.mark.parametrize(
    "api_url",
    ["http://api.example.com", "http://10.0.0.5:8080", "ftp://api.example.com", "not a url"],
)
def test_api_url_must_be_https_unless_loopback(
    case: Case, fake: FakeProviderServer, api_url: str
) -> None:
    error = error_of(lambda: build(case, fake, {"api_url": api_url}))
    assert error.code == "validation_error"
    assert "api_url" in error.detail


def test_the_private_network_guard_applies_to_api_url(case: Case, fake: FakeProviderServer) -> None:
    """Under the guard the fake (on 127.0.0.1) is refused at connect time, answered exactly
    as a closed port is (no port scanner), and allow-listing it lets the same client through."""
    guarded = BuildContext(timeout=5, network=NetworkPolicy(guard=True))
    client = build(case, fake, context=guarded)
    closed = build(case, fake, {"api_url": f"http://127.0.0.1:{unused_port()}"})
    refused, really_refused = error_of(client.verify), error_of(closed.verify)
    assert (refused.code, refused.outcome) == ("connection_refused", Outcome.TRANSIENT)
    assert (refused.code, refused.detail) == (really_refused.code, really_refused.detail)
    assert error_of(lambda: client.send(EMAIL)).code == "connection_refused"
    assert fake.requests == []
    allowed = NetworkPolicy(guard=True, allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert build(case, fake, context=BuildContext(timeout=5, network=allowed)).verify() == []
    for each in (client, closed):
        each.close()


def test_through_the_domain_layer_with_an_api_body(case: Case, fake: FakeProviderServer) -> None:
    settings = case.settings(fake)
    body = {
        "provider": case.name,
        "display_name": f"{case.name} production",
        "from_email": "hello@example.com",
        "from_name": "Acme",
        "reply_to": "support@example.com",
        "api_url": fake.url,
        **settings,
    }
    draft = domain.parse(body)
    assert draft.secrets == {case.secret: settings[case.secret]}
    assert case.secret not in draft.config
    assert draft.config["api_url"] == fake.url
    assert domain.verify(draft, CONTEXT) == []

    result = draft.client(CONTEXT).send(domain.test_email(draft, "you@example.org"))
    assert result.provider_message_id
    assert len(fake.messages) == 1
    assert fake.problems == []

    wrong = domain.parse({case.secret: "not-the-key"}, draft)
    with pytest.raises(DomainError) as caught:
        domain.verify(wrong, CONTEXT)
    assert caught.value.code == "auth_failed"
    assert "not-the-key" not in caught.value.detail

    insecure = domain.parse({"api_url": "http://api.example.com"}, draft)
    with pytest.raises(DomainError) as caught:
        domain.verify(insecure, CONTEXT)
    assert caught.value.code == "validation_error"


@pytest.mark.parametrize("value", ["", "   ", "clé-secrète", "key\twith-tab"])
def test_credentials_must_be_printable_ascii(
    case: Case, fake: FakeProviderServer, value: str
) -> None:
    error = error_of(lambda: build(case, fake, {case.secret: value}))
    assert error.code == "validation_error"
    assert case.secret in error.detail
    assert not value.strip() or value not in error.detail


def test_whitespace_around_pasted_credentials_is_ignored(
    case: Case, fake: FakeProviderServer
) -> None:
    padded = f"  {case.settings(fake)[case.secret]}\t"
    assert build(case, fake, {case.secret: padded}).verify() == []


def test_every_http_kind_is_registered_with_an_optional_api_url() -> None:
    for case in CASES:
        kind = PROVIDERS[case.name]
        fields = {f.name: f for f in kind.fields}
        assert fields["api_url"].required is False
        assert fields["api_url"].secret is False
        assert case.secret in kind.secret_fields


# -- Postmark ---------------------------------------------------------------------------------


@pytest.fixture
def postmark() -> Iterator[PostmarkFake]:
    with PostmarkFake() as server:
        yield server


def postmark_client(fake: PostmarkFake, **config: str) -> ProviderClient:
    settings = {"api_url": fake.url, **config}
    return PROVIDERS["postmark"].build(settings, {"server_token": fake.server_token}, CONTEXT)


def test_postmark_payload(postmark: PostmarkFake) -> None:
    postmark_client(postmark).send(EMAIL)
    [message] = postmark.messages
    assert message.headers["x-postmark-server-token"] == postmark.server_token
    assert message.headers["accept"] == "application/json"
    assert message.json == {
        "From": '"Acme, Inc." <hello@example.com>',
        "To": "ann@example.org, bob@example.org",
        "Subject": "Welcome aboard",
        "TextBody": "Hello Ann and Bob",
        "HtmlBody": "<p>Hello <b>Ann</b> and Bob</p>",
        "ReplyTo": "support@example.com",
        "Headers": [
            {"Name": "X-Campaign", "Value": "welcome-1"},
            {"Name": "List-Unsubscribe", "Value": "<https://example.com/u/1>"},
        ],
        "MessageStream": "outbound",
    }


def test_postmark_message_stream_and_minimal_message(postmark: PostmarkFake) -> None:
    email = OutgoingEmail(from_email="a@example.com", to=("b@example.org",), subject="s", text="t")
    postmark_client(postmark, message_stream="broadcast").send(email)
    assert postmark.messages[0].json == {
        "From": "a@example.com",
        "To": "b@example.org",
        "Subject": "s",
        "TextBody": "t",
        "MessageStream": "broadcast",
    }


def test_postmark_sandbox_server_warns() -> None:
    with PostmarkFake(delivery_type="Sandbox") as fake:
        [warning] = postmark_client(fake).verify()
    assert "Sandbox" in warning


def test_postmark_bad_token_advises_a_server_token(postmark: PostmarkFake) -> None:
    client = PROVIDERS["postmark"].build({"api_url": postmark.url}, {"server_token": "x"}, CONTEXT)
    error = error_of(client.verify)
    assert error.code == "auth_failed"
    assert "Server API token" in error.detail


def test_postmark_inactive_recipient_is_rejected_with_advice(postmark: PostmarkFake) -> None:
    postmark.fail_next(422)  # ErrorCode 406
    error = error_of(lambda: postmark_client(postmark).send(EMAIL))
    assert (error.code, error.transient) == ("rejected", False)
    assert "inactive" in error.detail


# -- SendGrid ---------------------------------------------------------------------------------


def sendgrid_client(fake: SendGridFake) -> ProviderClient:
    return PROVIDERS["sendgrid"].build({"api_url": fake.url}, {"api_key": fake.api_key}, CONTEXT)


def test_sendgrid_payload() -> None:
    with SendGridFake() as fake:
        result = sendgrid_client(fake).send(EMAIL)
        [message] = fake.messages
    assert message.headers["authorization"] == f"Bearer {fake.api_key}"
    assert message.json == {
        "personalizations": [{"to": [{"email": "ann@example.org"}, {"email": "bob@example.org"}]}],
        "from": {"email": "hello@example.com", "name": "Acme, Inc."},
        "reply_to": {"email": "support@example.com"},
        "subject": "Welcome aboard",
        "content": [
            {"type": "text/plain", "value": "Hello Ann and Bob"},
            {"type": "text/html", "value": "<p>Hello <b>Ann</b> and Bob</p>"},
        ],
        "headers": {"X-Campaign": "welcome-1", "List-Unsubscribe": "<https://example.com/u/1>"},
    }
    assert result.reply == "202 Accepted"


def test_sendgrid_html_only_message() -> None:
    email = OutgoingEmail(from_email="a@example.com", to=("b@example.org",), subject="s", html="h")
    with SendGridFake() as fake:
        sendgrid_client(fake).send(email)
        assert fake.messages[0].json["content"] == [{"type": "text/html", "value": "h"}]
        assert "reply_to" not in fake.messages[0].json


def test_sendgrid_key_without_mail_send_fails_verification() -> None:
    with SendGridFake(scopes=("stats.read",)) as fake:
        error = error_of(sendgrid_client(fake).verify)
    assert error.code == "auth_failed"
    assert "Mail Send" in error.detail


def test_sendgrid_unverified_sender_is_rejected_not_auth_failed() -> None:
    with SendGridFake(verified_senders={"other@example.com"}) as fake:
        error = error_of(lambda: sendgrid_client(fake).send(EMAIL))
    assert (error.code, error.transient) == ("rejected", False)
    assert "Single Sender" in error.detail  # our advice, chosen from the answer


# -- Mailgun ----------------------------------------------------------------------------------


def mailgun_client(fake: MailgunFake, key: str | None = None, **config: str) -> ProviderClient:
    settings = {"api_url": fake.url, "domain": fake.domain, **config}
    return PROVIDERS["mailgun"].build(settings, {"api_key": key or fake.api_key}, CONTEXT)


def test_mailgun_payload() -> None:
    with MailgunFake() as fake:
        result = mailgun_client(fake).send(EMAIL)
        [message] = fake.messages
    assert message.path == "/v3/mg.example.com/messages"
    assert message.headers["content-type"] == "application/x-www-form-urlencoded"
    assert message.form == {
        "from": ['"Acme, Inc." <hello@example.com>'],
        "to": ["ann@example.org", "bob@example.org"],
        "subject": ["Welcome aboard"],
        "text": ["Hello Ann and Bob"],
        "html": ["<p>Hello <b>Ann</b> and Bob</p>"],
        "h:Reply-To": ["support@example.com"],
        "h:X-Campaign": ["welcome-1"],
        "h:List-Unsubscribe": ["<https://example.com/u/1>"],
    }
    assert result.provider_message_id
    assert result.provider_message_id.endswith("@mg.example.com")
    assert not result.provider_message_id.startswith("<")
    assert result.reply == "200 OK"


def test_mailgun_region_picks_the_api_host() -> None:
    context = BuildContext()
    us = PROVIDERS["mailgun"].build({"domain": "mg.example.com"}, {"api_key": "k"}, context)
    eu = PROVIDERS["mailgun"].build(
        {"domain": "mg.example.com", "region": "eu"}, {"api_key": "k"}, context
    )
    assert "https://api.mailgun.net" in repr(us)
    assert "https://api.eu.mailgun.net" in repr(eu)


def test_mailgun_unknown_domain_names_the_region() -> None:
    with MailgunFake(domain="mg.example.com") as fake:
        error = error_of(mailgun_client(fake, domain="eu.example.com").verify)
    assert error.code == "auth_failed"
    assert "eu.example.com" in error.detail
    assert "region" in error.detail


def test_mailgun_domain_sending_key_verifies_with_a_warning() -> None:
    with MailgunFake(sending_key="sending-key-0123") as fake:
        [warning] = mailgun_client(fake, key="sending-key-0123").verify()
        assert fake.messages == []  # the probe sent nothing
    assert "sending key" in warning


def test_mailgun_wrong_key_fails_even_through_the_sending_key_probe() -> None:
    with MailgunFake(sending_key="sending-key-0123") as fake:
        error = error_of(mailgun_client(fake, key="nope-nope").verify)
    assert error.code == "auth_failed"


def test_mailgun_unverified_and_sandbox_domains_warn() -> None:
    with MailgunFake(domain_state="unverified", domain_type="sandbox") as fake:
        warnings = mailgun_client(fake).verify()
    assert len(warnings) == 2
    assert "unverified" in warnings[0]
    assert "sandbox" in warnings[1]


def test_mailgun_sandbox_refusal_is_rejected() -> None:
    with MailgunFake(domain_type="sandbox", authorized_recipients={"ann@example.org"}) as fake:
        error = error_of(lambda: mailgun_client(fake).send(EMAIL))
    assert (error.code, error.transient) == ("rejected", False)
    assert "authorized recipients" in error.detail


@pytest.mark.parametrize("value", ["example", "mg.example.com/../x", "-a.example.com", "a b.com"])
def test_mailgun_domain_must_be_a_domain_name(value: str) -> None:
    error = error_of(
        lambda: PROVIDERS["mailgun"].build({"domain": value}, {"api_key": "k"}, CONTEXT)
    )
    assert error.code == "validation_error"


# -- Resend -----------------------------------------------------------------------------------


def resend_client(fake: ResendFake) -> ProviderClient:
    return PROVIDERS["resend"].build({"api_url": fake.url}, {"api_key": fake.api_key}, CONTEXT)


def test_resend_payload() -> None:
    with ResendFake() as fake:
        resend_client(fake).send(EMAIL)
        [message] = fake.messages
    assert message.headers["authorization"] == f"Bearer {fake.api_key}"
    assert message.json == {
        "from": '"Acme, Inc." <hello@example.com>',
        "to": ["ann@example.org", "bob@example.org"],
        "subject": "Welcome aboard",
        "text": "Hello Ann and Bob",
        "html": "<p>Hello <b>Ann</b> and Bob</p>",
        "reply_to": "support@example.com",
        "headers": {"X-Campaign": "welcome-1", "List-Unsubscribe": "<https://example.com/u/1>"},
    }


def test_resend_sending_only_key_verifies_with_a_warning() -> None:
    with ResendFake(restricted=True) as fake:
        [warning] = resend_client(fake).verify()
    assert "Sending access" in warning


def test_resend_without_a_verified_domain_warns_and_refuses_to_send() -> None:
    with ResendFake(domains={"example.com": "pending"}) as fake:
        [warning] = resend_client(fake).verify()
        error = error_of(lambda: resend_client(fake).send(EMAIL))
    assert "No domain is verified" in warning
    assert (error.code, error.transient) == ("rejected", False)  # 403, but not about the key
    assert "Verify the from_email domain" in error.detail


def test_resend_invalid_key_is_auth_failed_with_advice() -> None:
    with ResendFake() as fake:
        client = PROVIDERS["resend"].build({"api_url": fake.url}, {"api_key": "re_no"}, CONTEXT)
        error = error_of(client.verify)
    assert error.code == "auth_failed"
    assert "Check the API key" in error.detail


def test_resend_daily_quota_is_deferred() -> None:
    with ResendFake() as fake:
        body = {"statusCode": 429, "message": "You have reached your daily email sending quota.",
                "name": "daily_quota_exceeded"}  # fmt: skip
        fake.fail_next(429, body)
        error = error_of(lambda: resend_client(fake).send(EMAIL))
    assert (error.code, error.transient) == ("deferred", True)


# -- SMTP2GO ----------------------------------------------------------------------------------


def smtp2go_client(fake: SMTP2GOFake, api_url: str | None = None) -> ProviderClient:
    return PROVIDERS["smtp2go"].build(
        {"api_url": api_url or fake.url}, {"api_key": fake.api_key}, CONTEXT
    )


def test_smtp2go_payload() -> None:
    with SMTP2GOFake() as fake:
        smtp2go_client(fake).send(EMAIL)
        [message] = fake.messages
    assert message.headers["x-smtp2go-api-key"] == fake.api_key
    assert "api_key" not in message.json  # the key travels in the header only
    assert message.json == {
        "sender": '"Acme, Inc." <hello@example.com>',
        "to": ["ann@example.org", "bob@example.org"],
        "subject": "Welcome aboard",
        "text_body": "Hello Ann and Bob",
        "html_body": "<p>Hello <b>Ann</b> and Bob</p>",
        "custom_headers": [
            {"header": "Reply-To", "value": "support@example.com"},
            {"header": "X-Campaign", "value": "welcome-1"},
            {"header": "List-Unsubscribe", "value": "<https://example.com/u/1>"},
        ],
    }


def test_smtp2go_accepts_the_console_base_url_with_v3() -> None:
    with SMTP2GOFake() as fake:
        client = smtp2go_client(fake, api_url=fake.url + "/v3/")
        assert client.verify() == []
        assert fake.requests[-1].path == "/v3/stats/email_summary"


def test_smtp2go_key_without_stats_permission_verifies_with_a_warning() -> None:
    with SMTP2GOFake(permissions={"/email/send"}) as fake:
        [warning] = smtp2go_client(fake).verify()
    assert "/email/send" in warning


def test_smtp2go_key_without_send_permission_is_auth_failed() -> None:
    with SMTP2GOFake(permissions={"/stats/email_summary"}) as fake:
        error = error_of(lambda: smtp2go_client(fake).send(EMAIL))
    assert error.code == "auth_failed"
    assert "Permissions" in error.detail


def test_smtp2go_ok_with_a_failed_recipient_is_rejected() -> None:
    with SMTP2GOFake() as fake:
        failed = {"succeeded": 0, "failed": 1, "failures": ["ann@example.org: blocked"]}
        fake.fail_next(200, {"request_id": "r1", "data": failed})
        error = error_of(lambda: smtp2go_client(fake).send(EMAIL))
    assert (error.code, error.transient) == ("rejected", False)
    assert "Activity" in error.detail
    assert "blocked" not in error.detail  # SMTP2GO's own words are not echoed


def test_smtp2go_exhausted_allowance_warns() -> None:
    with SMTP2GOFake(cycle_remaining=0) as fake:
        [warning] = smtp2go_client(fake).verify()
    assert "allowance" in warning


# -- Amazon SES -------------------------------------------------------------------------------


def ses_client(fake: SESFake, **changes: str) -> ProviderClient:
    config = {"access_key_id": fake.access_key_id, "region": fake.region, "api_url": fake.url}
    secrets = {"secret_access_key": changes.pop("secret_access_key", fake.secret_access_key)}
    return PROVIDERS["ses"].build({**config, **changes}, secrets, CONTEXT)


def test_ses_payload_and_signature() -> None:
    with SESFake(region="eu-west-1") as fake:
        result = ses_client(fake).send(EMAIL)
        [message] = fake.messages
    authorization = message.headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={fake.access_key_id}/")
    assert "/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date," in (
        authorization
    )
    assert message.json == {
        "FromEmailAddress": '"Acme, Inc." <hello@example.com>',
        "Destination": {"ToAddresses": ["ann@example.org", "bob@example.org"]},
        "ReplyToAddresses": ["support@example.com"],
        "Content": {
            "Simple": {
                "Subject": {"Data": "Welcome aboard", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": "Hello Ann and Bob", "Charset": "UTF-8"},
                    "Html": {"Data": "<p>Hello <b>Ann</b> and Bob</p>", "Charset": "UTF-8"},
                },
                "Headers": [
                    {"Name": "X-Campaign", "Value": "welcome-1"},
                    {"Name": "List-Unsubscribe", "Value": "<https://example.com/u/1>"},
                ],
            }
        },
    }
    assert result.provider_message_id


def test_ses_non_ascii_display_name_is_an_encoded_word() -> None:
    email = OutgoingEmail(
        from_email="a@example.com", from_name="Zoë Café", to=("b@example.org",), subject="é",
        text="t",
    )  # fmt: skip
    with SESFake() as fake:
        ses_client(fake).send(email)
        sender = fake.messages[0].json["FromEmailAddress"]
    assert sender.isascii()
    assert sender.endswith(" <a@example.com>")
    assert str(make_header(decode_header(sender.removesuffix(" <a@example.com>")))) == "Zoë Café"


def test_ses_wrong_secret_fails_the_fakes_signature_check() -> None:
    with SESFake() as fake:
        error = error_of(ses_client(fake, secret_access_key="not-the-secret").verify)
        assert "does not match" in fake.problems[-1]
    assert error.code == "auth_failed"
    assert "secret_access_key" in error.detail


def test_ses_unknown_key_id_is_auth_failed() -> None:
    with SESFake() as fake:
        error = error_of(ses_client(fake, access_key_id="AKIAUNKNOWN000000000").verify)
    assert error.code == "auth_failed"
    assert "access_key_id" in error.detail


def test_ses_clock_skew_is_auth_failed_naming_the_clock() -> None:
    import datetime as dt

    def late() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    with SESFake(clock=late) as fake:
        error = error_of(ses_client(fake).verify)
    assert error.code == "auth_failed"
    assert "clock" in error.detail


def test_ses_sandbox_and_paused_accounts_warn() -> None:
    with SESFake(production_access=False, sending_enabled=False) as fake:
        warnings = ses_client(fake).verify()
    assert len(warnings) == 2
    assert "sandbox" in warnings[0]
    assert "paused" in warnings[1]


def test_ses_unverified_identity_is_rejected_with_advice() -> None:
    with SESFake() as fake:
        fake.fail_next(400)  # MessageRejected: Email address is not verified
        error = error_of(lambda: ses_client(fake).send(EMAIL))
    assert (error.code, error.transient) == ("rejected", False)
    assert "MessageRejected" in error.detail
    assert "Verify from_email" in error.detail


def test_ses_throttling_sent_as_400_is_still_deferred() -> None:
    with SESFake() as fake:
        throttled = fake.error(400, "Maximum sending rate exceeded.", kind="LimitExceededException")
        fake.fail_next(400, throttled.body, headers=throttled.headers)
        error = error_of(lambda: ses_client(fake).send(EMAIL))
    assert (error.code, error.transient) == ("deferred", True)


def test_ses_more_than_15_headers_is_refused_before_sending() -> None:
    headers = {f"X-H{i}": str(i) for i in range(16)}
    email = OutgoingEmail(
        from_email="a@example.com", to=("b@example.org",), subject="s", text="t", headers=headers
    )
    with SESFake() as fake:
        error = error_of(lambda: ses_client(fake).send(email))
        assert fake.requests == []
    assert error.code == "rejected"


@pytest.mark.parametrize("region", ["", "us-east", "evil.com/x", "us_east_1", "us-east-1.evil.com"])
def test_ses_region_must_be_a_region_name(region: str) -> None:
    config = {"access_key_id": "AKIA", "region": region}
    error = error_of(lambda: PROVIDERS["ses"].build(config, {"secret_access_key": "s"}, CONTEXT))
    assert error.code == "validation_error"


def test_ses_default_endpoint_follows_the_region() -> None:
    config = {"access_key_id": "AKIA", "region": "ap-southeast-2"}
    client = PROVIDERS["ses"].build(config, {"secret_access_key": "s"}, CONTEXT)
    assert "https://email.ap-southeast-2.amazonaws.com" in repr(client)


# AWS's published SigV4 examples: the "post-vanilla", "post-vanilla-query" and
# "post-x-www-form-urlencoded" cases of the SigV4 test suite (key AKIDEXAMPLE, service
# "service"), and the IAM ListUsers example of the SigV4 documentation.
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_HEADERS = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("method", "query", "headers", "payload", "service", "expected"),
    [
        ("POST", "", SUITE_HEADERS, b"", "service",
         "SignedHeaders=host;x-amz-date, "
         "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        ("POST", "Param1=value1", SUITE_HEADERS, b"", "service",
         "SignedHeaders=host;x-amz-date, "
         "Signature=28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
        ("POST", "", {"Content-Type": FORM, **SUITE_HEADERS}, b"Param1=value1", "service",
         "SignedHeaders=content-type;host;x-amz-date, "
         "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
        ("GET", "Action=ListUsers&Version=2010-05-08",
         {"Content-Type": f"{FORM}; charset=utf-8", "Host": "iam.amazonaws.com",
          "X-Amz-Date": "20150830T123600Z"}, b"", "iam",
         "SignedHeaders=content-type;host;x-amz-date, "
         "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
    ],
    ids=["post-vanilla", "post-vanilla-query", "post-x-www-form-urlencoded", "iam-listusers"],
)  # fmt: skip
def test_signature_v4_matches_aws_examples(
    method: str,
    query: str,
    headers: dict[str, str],
    payload: bytes,
    service: str,
    expected: str,
) -> None:
    authorization = signature_v4(
        method=method,
        path="/",
        query=query,
        headers=headers,
        payload=payload,
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SUITE_SECRET,
        region="us-east-1",
        service=service,
        amz_date="20150830T123600Z",
    )
    assert authorization == (
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, "
        + expected
    )


# -- the fakes are strict ---------------------------------------------------------------------


def test_postmark_fake_refuses_a_misspelt_field() -> None:
    with PostmarkFake() as fake:
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": fake.server_token}
        body = {"From": "a@example.com", "To": "b@example.org", "TextBody": "t",
                "Reply_To": "c@example.com"}  # fmt: skip
        answer = httpx.post(fake.url + "/email", headers=headers, json=body)
        assert answer.status_code == 422
        assert answer.json()["ErrorCode"] == 403
        assert "Reply_To" in fake.problems[-1]
        assert fake.messages == []


def test_sendgrid_fake_wants_text_plain_first() -> None:
    with SendGridFake() as fake:
        body = {
            "personalizations": [{"to": [{"email": "b@example.org"}]}],
            "from": {"email": "a@example.com"},
            "subject": "s",
            "content": [{"type": "text/html", "value": "h"}, {"type": "text/plain", "value": "t"}],
        }
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        answer = httpx.post(fake.url + "/v3/mail/send", headers=headers, json=body)
        assert answer.status_code == 400
        assert "text/plain must be first" in answer.json()["errors"][0]["message"]
        assert fake.messages == []


def test_mailgun_fake_wants_a_subject() -> None:
    with MailgunFake() as fake:
        answer = httpx.post(
            f"{fake.url}/v3/{fake.domain}/messages",
            auth=("api", fake.api_key),
            data={"from": "a@example.com", "to": "b@example.org", "text": "t"},
        )
        assert answer.status_code == 400
        assert answer.json() == {"message": "'subject' parameter is missing"}


def test_resend_fake_refuses_a_camel_case_field() -> None:
    with ResendFake() as fake:
        body = {"from": "a@example.com", "to": "b@example.org", "subject": "s", "text": "t",
                "replyTo": "c@example.com"}  # fmt: skip
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        answer = httpx.post(fake.url + "/emails", headers=headers, json=body)
        assert answer.status_code == 422
        assert answer.json()["name"] == "invalid_parameter"


def test_smtp2go_fake_refuses_mime_headers() -> None:
    with SMTP2GOFake() as fake:
        body = {
            "sender": "a@example.com",
            "to": ["b@example.org"],
            "subject": "s",
            "text_body": "t",
            "custom_headers": [{"header": "MIME-Version", "value": "1"}],
        }
        answer = httpx.post(
            fake.url + "/v3/email/send", headers={"X-Smtp2go-Api-Key": fake.api_key}, json=body
        )  # fmt: skip
        assert answer.status_code == 400
        assert answer.json()["data"]["field_validation_errors"]["fieldname"] == "custom_headers"


def test_ses_fake_checks_the_signed_payload() -> None:
    import datetime as dt

    with SESFake() as fake:
        amz_date = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = {
            "Host": f"127.0.0.1:{fake.port}",
            "X-Amz-Date": amz_date,
            "Content-Type": "application/json",
        }
        signed = b'{"FromEmailAddress": "a@example.com"}'
        headers["Authorization"] = signature_v4(
            method="POST", path="/v2/email/outbound-emails", query="", headers=headers,
            payload=signed, access_key_id=fake.access_key_id,
            secret_access_key=fake.secret_access_key, region=fake.region, service="ses",
            amz_date=amz_date,
        )  # fmt: skip
        url = fake.url + "/v2/email/outbound-emails"
        tampered = httpx.post(url, headers=headers, content=signed.replace(b"a@", b"x@"))
        assert tampered.status_code == 403
        assert tampered.headers["X-Amzn-ErrorType"].startswith("InvalidSignatureException:")
        honest = httpx.post(url, headers=headers, content=signed)  # signature fine, body not
        assert honest.status_code == 400
        assert honest.headers["X-Amzn-ErrorType"].startswith("BadRequestException:")


def test_a_fake_stops_promptly_while_a_request_is_delayed() -> None:
    import time

    fake = PostmarkFake().start()
    fake.slow_next(60)
    client = postmark_client_with_timeout(fake, 0.2)
    assert error_of(client.verify).code == "timeout"
    started = time.perf_counter()
    fake.stop()
    assert time.perf_counter() - started < 5


def postmark_client_with_timeout(fake: PostmarkFake, timeout: float) -> ProviderClient:
    return PROVIDERS["postmark"].build(
        {"api_url": fake.url}, {"server_token": fake.server_token}, BuildContext(timeout=timeout)
    )


# -- shared helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com",
        "https://api.example.com:8443/prefix",
        "http://127.0.0.1:8080",
        "http://localhost:1234",
        "http://[::1]:8080",
    ],
)
def test_api_url_accepted(url: str) -> None:
    assert str(parse_api_url(url, "https://default.example.com")).startswith(url.split(":")[0])


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com",
        "http://192.168.1.10",
        "https://user:pass@api.example.com",
        "https://api.example.com/?x=1",
        "https://api.example.com/#frag",
        "mailto:x@example.com",
        "https://",
    ],
)
def test_api_url_refused(url: str) -> None:
    with pytest.raises(DeliveryError) as caught:
        parse_api_url(url, "https://default.example.com")
    assert caught.value.code == "validation_error"


def test_api_url_defaults_when_unset() -> None:
    assert str(parse_api_url(None, "https://api.example.com")) == "https://api.example.com"
    assert str(parse_api_url("", "https://api.example.com")) == "https://api.example.com"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, ("auth_failed", False)),
        (403, ("auth_failed", False)),
        (400, ("rejected", False)),
        (404, ("rejected", False)),
        (422, ("rejected", False)),
        (408, ("deferred", True)),
        (429, ("deferred", True)),
        (500, ("deferred", True)),
        (503, ("deferred", True)),
        (302, ("unexpected_response", False)),
    ],
)
def test_classify_status(status: int, expected: tuple[str, bool]) -> None:
    assert classify_status(status) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (None, "a@example.com"),
        ("Acme", "Acme <a@example.com>"),
        ("Acme, Inc.", '"Acme, Inc." <a@example.com>'),
        ('Say "hi"', '"Say \\"hi\\"" <a@example.com>'),
        ("Zoë", "Zoë <a@example.com>"),
    ],
)
def test_mailbox(name: str | None, expected: str) -> None:
    assert mailbox("a@example.com", name) == expected


def test_dns_failure_is_dns_failed() -> None:
    client = PROVIDERS["resend"].build(
        {"api_url": "https://api.nonexistent.invalid"}, {"api_key": "re_x"}, CONTEXT
    )
    with unresolvable_names():
        error = error_of(client.verify)
    assert (error.code, error.transient) == ("dns_failed", True)  # resolvers recover
    assert "re_x" not in error.detail


def test_tls_failure_is_tls_failed() -> None:
    # The fake speaks plain HTTP, so an https:// client fails the handshake.
    with PostmarkFake() as fake:
        client = PROVIDERS["postmark"].build(
            {"api_url": f"https://127.0.0.1:{fake.port}"}, {"server_token": "t"}, CONTEXT
        )
        error = error_of(client.verify)
    assert (error.code, error.transient) == ("tls_failed", False)
