"""Custom SMTP email providers end to end (spec section 2), through the real server.

Every API test runs ``getfluxly serve`` as a subprocess (the testkit's :mod:`flux_testkit.gfserver`)
once on SQLite and once on PostgreSQL, and points providers at real SMTP relays on 127.0.0.1
(:mod:`flux_testkit.smtpd`, whose certificates the server trusts through ``SSL_CERT_FILE``).

Cost control: starting a server takes over a second, so the tests that need no special
configuration share one server per backend (module scope), each in a project of its own; only
the multi-tenant guard gets a server of its own (on SQLite only: it refuses before any database
write). The shared server runs with a 1 s SMTP timeout (plenty for relays on this machine), so
the relay that never greets costs 1 s instead of the harness's 10 s, and with DEBUG logging, so
the "password never in the logs" checks see as much as the server can write.

Nothing here sends traffic off this machine, DNS included: the public-host warning is checked
through the domain layer with sockets disabled, and the unresolvable host is a name the C
resolver refuses before building a query (see :data:`UNRESOLVABLE`).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from flux_testkit.gfserver import BACKENDS, GFServer, Harness
from flux_testkit.netguard import unresolvable_names
from flux_testkit.smtpd import Faults, SMTPTestServer, closed_port
from fluxmail import FluxMail
from getfluxly_server.delivery.base import BuildContext, DeliveryError, is_public_host
from getfluxly_server.delivery.netguard import NetworkPolicy
from getfluxly_server.domain import providers as domain
from getfluxly_server.domain.errors import DomainError

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

USER = "user@example.com"
#: The spec's curl body, field for field; tests replace the host, port and credentials.
SPEC_BODY: dict[str, Any] = {
    "provider": "smtp",
    "display_name": "Postmark Production",
    "from_email": "hello@yourdomain.com",
    "from_name": "Acme",
    "reply_to": "support@yourdomain.com",
    "smtp_host": "smtp.postmarkapp.com",
    "smtp_port": 587,
    "smtp_secure": "starttls",
    "username": "TOKEN",
    "password": "TOKEN",
}
SHARED_ENV = {"GETFLUXLY_SMTP_TIMEOUT": "1", "GETFLUXLY_LOG_LEVEL": "DEBUG"}
GUARD_ENV = {"GETFLUXLY_MULTI_TENANT_GUARD": "true"}
#: Five 60-character labels: longer than the 253 characters a DNS name may have.
TOO_LONG = ".".join(c * 60 for c in "abcde") + ".invalid"


def new_password() -> str:
    """A password unique to one test, so finding it anywhere can only mean a leak."""
    return f"pw-{secrets.token_hex(10)}"


def spec_body(relay: SMTPTestServer, password: str, **changes: Any) -> dict[str, Any]:
    """The spec's body pointed at ``relay`` as ``localhost`` (the name in its certificate)."""
    body = {**SPEC_BODY, "smtp_host": "localhost", "smtp_port": relay.port}
    body.update(username=USER, password=password)
    body.update(changes)
    return body


def starttls_relay(smtp_server: SMTPServerFactory, password: str, **options: Any) -> SMTPTestServer:
    """A relay like a real port 587: STARTTLS, and AUTH only once the session is encrypted."""
    return smtp_server(
        tls="starttls", auth=True, users={USER: password}, auth_require_tls=True, **options
    )


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


class Api:
    """One test's view of a server: a fresh project, the workspace key, every response kept.

    Keeping every response lets a test assert at the end that a password appeared in none.
    """

    def __init__(self, server: GFServer) -> None:
        self.server = server
        self.project_id = server.create_project().id
        self.responses: list[httpx.Response] = []
        self.http = server.client()
        self.http.event_hooks["response"] = [self._keep]

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def create(self, body: Any) -> httpx.Response:
        return self.http.post(f"/v1/projects/{self.project_id}/email-providers", json=body)

    def listing(self, project_id: str | None = None) -> list[dict[str, Any]]:
        response = self.http.get(f"/v1/projects/{project_id or self.project_id}/email-providers")
        assert response.status_code == 200, response.text
        return list(response.json()["email_providers"])

    def get(self, provider_id: str) -> httpx.Response:
        return self.http.get(f"/v1/email-providers/{provider_id}")

    def patch(self, provider_id: str, body: Any) -> httpx.Response:
        return self.http.patch(f"/v1/email-providers/{provider_id}", json=body)

    def delete(self, provider_id: str) -> httpx.Response:
        return self.http.delete(f"/v1/email-providers/{provider_id}")

    def test_send(self, provider_id: str, body: Any) -> httpx.Response:
        return self.http.post(f"/v1/email-providers/{provider_id}/test", json=body)

    def created(self, body: Any) -> dict[str, Any]:
        response = self.create(body)
        assert response.status_code == 201, response.text
        provider: dict[str, Any] = response.json()["email_provider"]
        return provider

    def assert_never_shown(self, *passwords: str) -> None:
        """No response of this test and no line the server logged holds any of ``passwords``."""
        logs = self.server.logs()
        for password in passwords:
            for response in self.responses:
                assert password not in response.text, (response.request.url, response.text)
            assert password not in logs, "password in the server logs"


def assert_refused(response: httpx.Response, code: str) -> dict[str, Any]:
    """A 4xx whose body is ``{"error": code, "detail": ...}``; returns the body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert body["detail"], body
    return body


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def server(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GFServer]:
    """``getfluxly serve`` shared by this module's tests, once per database backend."""
    directory = tmp_path_factory.mktemp(f"providers-{request.param}")
    database = gf_harness.database(request.param, directory / "db")
    shared = GFServer(gf_harness, database, directory / "logs", env=SHARED_ENV)
    try:
        yield shared.start()
    finally:
        shared.close()
        database.close()


@pytest.fixture
def api(server: GFServer) -> Iterator[Api]:
    view = Api(server)
    yield view
    view.http.close()


# -- create: verified before saving ------------------------------------------------------------


def test_spec_body_over_starttls_with_auth_is_saved(
    api: Api, smtp_server: SMTPServerFactory
) -> None:
    """The spec's body, against a relay that only takes AUTH after STARTTLS: 201, every field
    but the password echoed, no warnings, verified; encrypted at rest."""
    password = new_password()
    relay = starttls_relay(smtp_server, password)
    body = spec_body(relay, password)
    assert set(body) == set(SPEC_BODY)

    provider = api.created(body)

    for name, value in body.items():
        if name != "password":
            assert provider[name] == value, name
    assert "password" not in provider
    assert provider["secret_set"] is True
    assert provider["warnings"] == []
    assert provider["id"].startswith("prv_")
    assert provider["project_id"] == api.project_id
    when(provider["verified_at"])  # a timestamp: verified before it was saved
    # Verification really ran: TLS first, then AUTH, and nothing was sent.
    commands = [c.split()[0].upper() for c in relay.commands]
    assert "STARTTLS" in commands
    assert "AUTH" in commands[commands.index("STARTTLS") :]
    assert "MAIL" not in commands
    assert relay.messages == []
    assert [p["id"] for p in api.listing()] == [provider["id"]]
    assert password.encode() not in api.server.database.stored_bytes()
    api.assert_never_shown(password)


def test_wrong_password_is_auth_failed_and_nothing_is_saved(
    api: Api, smtp_server: SMTPServerFactory
) -> None:
    password = new_password()
    relay = starttls_relay(smtp_server, password)
    wrong = new_password()
    body = assert_refused(api.create(spec_body(relay, wrong)), "auth_failed")
    assert "password" in body["detail"]
    assert "app password" in body["detail"]  # what to try, as the spec asks
    assert api.listing() == []
    api.assert_never_shown(password, wrong)


def test_closed_port_is_connection_refused(api: Api) -> None:
    password = new_password()
    body = {**SPEC_BODY, "smtp_host": "127.0.0.1", "smtp_port": closed_port(), "password": password}
    detail = assert_refused(api.create(body), "connection_refused")["detail"]
    assert "2525" in detail  # the spec's advice for egress firewalls
    assert api.listing() == []
    api.assert_never_shown(password)


def test_starttls_against_a_relay_without_it(api: Api, smtp_server: SMTPServerFactory) -> None:
    """starttls_not_advertised, and the advice to switch to implicit TLS on 465; the password
    never went over the plaintext session."""
    password = new_password()
    relay = smtp_server(tls="none", auth=True, users={USER: password})
    detail = assert_refused(api.create(spec_body(relay, password)), "starttls_not_advertised")[
        "detail"
    ]
    assert "ssl" in detail
    assert "465" in detail
    assert not any(c.upper().startswith("AUTH") for c in relay.commands)
    api.assert_never_shown(password)


def test_starttls_advice_speaks_the_apis_language(api: Api, smtp_server: SMTPServerFactory) -> None:
    relay = smtp_server(tls="none", auth=True)
    detail = assert_refused(api.create(spec_body(relay, "s3cret-pass")), "starttls_not_advertised")[
        "detail"
    ]
    assert "use_ssl" not in detail
    assert "use_tls" not in detail
    assert "smtp_secure" in detail


def test_implicit_tls_relay_with_ssl(api: Api, smtp_server: SMTPServerFactory) -> None:
    """smtp_secure "ssl" on a port-465-style relay: verified, and a test send goes over TLS."""
    password = new_password()
    relay = smtp_server(tls="ssl", auth=True, users={USER: password})
    provider = api.created(spec_body(relay, password, smtp_secure="ssl"))
    assert provider["smtp_secure"] == "ssl"
    assert provider["warnings"] == []
    response = api.test_send(provider["id"], {"to": "you@yourdomain.com"})
    assert response.status_code == 200, response.text
    [message] = relay.wait_for_messages(1)
    assert message.tls
    assert message.auth_user == USER
    api.assert_never_shown(password)


def test_ssl_against_a_starttls_port_is_tls_failed(
    api: Api, smtp_server: SMTPServerFactory
) -> None:
    relay = starttls_relay(smtp_server, "s3cret-pass")
    detail = assert_refused(
        api.create(spec_body(relay, "s3cret-pass", smtp_secure="ssl")), "tls_failed"
    )["detail"]
    assert "starttls" in detail  # the advice: the port may expect the other TLS mode


def test_impossible_host_name_is_refused_before_any_lookup(api: Api) -> None:
    body = {**SPEC_BODY, "smtp_host": TOO_LONG}
    assert assert_refused(api.create(body), "validation_error")["field"] == "smtp_host"


def test_unresolvable_host_is_dns_failed() -> None:
    # In process, with a resolver that fails locally: a real unknown name would send a query
    # off this machine.
    draft = domain.parse({**SPEC_BODY, "smtp_host": "relay.example.invalid"})
    with unresolvable_names(), pytest.raises(DomainError) as refused:
        domain.verify(draft, BuildContext(timeout=2))
    assert refused.value.code == "dns_failed"
    assert "host name" in refused.value.detail


def test_relay_that_never_greets_is_timeout(api: Api) -> None:
    """A socket that accepts TCP (the kernel does, from the backlog) but never says 220: the
    server gives up after GETFLUXLY_SMTP_TIMEOUT (1 s here) with ``timeout``."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        body = {**SPEC_BODY, "smtp_host": "127.0.0.1", "smtp_port": silent.getsockname()[1]}
        response = api.create(body)
    detail = assert_refused(response, "timeout")["detail"]
    assert "1 s" in detail
    assert api.listing() == []


def test_plaintext_to_loopback_is_allowed_without_warning(
    api: Api, smtp_server: SMTPServerFactory
) -> None:
    """smtp_secure "none" is for trusted in-house relays; 127.0.0.1 is allowed by default (no
    guard) and is not a public host, so no warning. AUTH goes in plaintext, by choice."""
    password = new_password()
    relay = smtp_server(tls="none", auth=True, users={USER: password})
    provider = api.created(spec_body(relay, password, smtp_host="127.0.0.1", smtp_secure="none"))
    assert provider["warnings"] == []
    assert any(c.upper().startswith("AUTH") for c in relay.commands)
    response = api.test_send(provider["id"], {"to": "you@yourdomain.com"})
    assert response.status_code == 200, response.text
    [message] = relay.wait_for_messages(1)
    assert not message.tls
    assert message.auth_user == USER
    api.assert_never_shown(password)


# -- validation: before any network I/O ---------------------------------------------------------


#: Marks a field to leave out of the body.
REMOVE = object()
#: id → (changes to a valid body, the field the error must name).
INVALID_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "missing display_name": ({"display_name": REMOVE}, "display_name"),
    "missing from_email": ({"from_email": REMOVE}, "from_email"),
    "missing smtp_host": ({"smtp_host": REMOVE}, "smtp_host"),
    "missing smtp_port": ({"smtp_port": REMOVE}, "smtp_port"),
    "missing smtp_secure": ({"smtp_secure": REMOVE}, "smtp_secure"),
    "missing username": ({"username": REMOVE}, "username"),
    "missing password": ({"password": REMOVE}, "password"),
    "empty password": ({"password": ""}, "password"),
    "port 0": ({"smtp_port": 0}, "smtp_port"),
    "port 70000": ({"smtp_port": 70000}, "smtp_port"),
    "port as text": ({"smtp_port": "587"}, "smtp_port"),
    "port as bool": ({"smtp_port": True}, "smtp_port"),
    "smtp_secure tls": ({"smtp_secure": "tls"}, "smtp_secure"),
    "smtp_secure STARTTLS": ({"smtp_secure": "STARTTLS"}, "smtp_secure"),
    "unknown field": ({"smtp_pasword": "typo"}, "smtp_pasword"),
    "bad from_email": ({"from_email": "hello-at-yourdomain"}, "from_email"),
    "from_email injection": ({"from_email": "a@yourdomain.com\r\nBcc: x@evil.test"}, "from_email"),
    "bad reply_to": ({"reply_to": "support"}, "reply_to"),
    "from_name injection": ({"from_name": "Acme\r\nBcc: x@evil.test"}, "from_name"),
    "display_name not text": ({"display_name": 5}, "display_name"),
    "unknown provider": ({"provider": "carrier-pigeon"}, "provider"),
    "host with a newline": ({"smtp_host": "relay\r\nRCPT TO:<x@evil.test>"}, "smtp_host"),
}


def test_invalid_bodies_are_validation_errors_naming_the_field(
    api: Api, plain_smtp: SMTPTestServer
) -> None:
    """Each case of INVALID_BODIES: 400 validation_error naming the field, checked before the
    server connects anywhere (the bodies point at an idle local relay that must see no
    connection). One test loops over the cases: they share a project, which keeps the 22
    cases x 2 backends from costing a project and a relay each."""
    valid = {**SPEC_BODY, "smtp_host": "127.0.0.1", "smtp_port": plain_smtp.port}
    wrong: list[str] = []
    for case, (changes, field) in INVALID_BODIES.items():
        body = {k: v for k, v in {**valid, **changes}.items() if v is not REMOVE}
        response = api.create(body)
        refusal = response.json()
        # Unknown fields are named in the detail only; every other refusal also in "field".
        expected_field = field if field in SPEC_BODY else refusal.get("field")
        if (
            response.status_code != 400
            or refusal.get("error") != "validation_error"
            or field not in refusal.get("detail", "")
            or refusal.get("field") != expected_field
        ):
            wrong.append(f"{case}: {response.status_code} {response.text}")
    assert wrong == []
    assert plain_smtp.connections == 0
    assert api.listing() == []


def test_body_that_is_not_an_object_is_validation_error(api: Api) -> None:
    assert_refused(api.create(["provider", "smtp"]), "validation_error")
    response = api.http.post(
        f"/v1/projects/{api.project_id}/email-providers",
        content=b'{"provider": "smtp",',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"


# -- read, update, delete ---------------------------------------------------------------------


def test_get_list_patch_delete(api: Api, smtp_server: SMTPServerFactory) -> None:
    """The lifecycle of one provider. A display_name change does not reconnect; a password
    change is verified first, and a wrong new password is refused with the old one kept."""
    password = new_password()
    relay = starttls_relay(smtp_server, password)
    created = api.created(spec_body(relay, password))
    provider_id = created["id"]

    got = api.get(provider_id)
    assert got.status_code == 200
    assert got.json()["email_provider"] == {k: v for k, v in created.items() if k != "warnings"}
    other_project = api.server.create_project("Other project")
    assert api.listing(other_project.id) == []
    # Providers are workspace-key business; a project's server key is the wrong kind.
    with api.server.client(other_project.secret_key) as project_client:
        response = project_client.get(f"/v1/email-providers/{provider_id}")
    assert_refused(response, "wrong_key_type")

    connections = relay.connections
    renamed = api.patch(provider_id, {"display_name": "Postmark (renamed)"})
    assert renamed.status_code == 200, renamed.text
    renamed_view = renamed.json()["email_provider"]
    assert renamed_view["display_name"] == "Postmark (renamed)"
    assert renamed_view["verified_at"] == created["verified_at"]
    assert renamed_view["warnings"] == []
    assert relay.connections == connections  # no reconnection for a cosmetic change

    wrong = new_password()
    assert_refused(api.patch(provider_id, {"password": wrong}), "auth_failed")
    after_refusal = api.get(provider_id).json()["email_provider"]
    assert after_refusal["verified_at"] == created["verified_at"]
    assert after_refusal["display_name"] == "Postmark (renamed)"
    # The old password is still the stored one: a test send authenticates with it.
    response = api.test_send(provider_id, {"to": "you@yourdomain.com"})
    assert response.status_code == 200, response.text

    rotated = new_password()
    relay.users[USER] = rotated  # the relay's owner rotated the credential
    changed = api.patch(provider_id, {"password": rotated})
    assert changed.status_code == 200, changed.text
    assert when(changed.json()["email_provider"]["verified_at"]) > when(created["verified_at"])
    response = api.test_send(provider_id, {"to": "you@yourdomain.com"})
    assert response.status_code == 200, response.text

    assert_refused(api.patch(provider_id, {"smtp_port": 70000}), "validation_error")
    assert_refused(api.patch(provider_id, {"provider": "other"}), "validation_error")

    deleted = api.delete(provider_id)
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": True, "id": provider_id}
    assert_refused(api.get(provider_id), "not_found")
    assert_refused(api.delete(provider_id), "not_found")
    assert_refused(api.test_send(provider_id, {"to": "you@yourdomain.com"}), "not_found")
    assert api.listing() == []
    api.assert_never_shown(password, wrong, rotated)


def test_patch_refuses_fields_of_other_kinds_and_typos(
    api: Api, smtp_server: SMTPServerFactory
) -> None:
    """PATCH takes the provider's own kind's settings only: another kind's setting or a
    misspelt one is a 400 naming it, and nothing changes."""
    relay = smtp_server(tls="none", auth=True)
    provider = api.created(
        spec_body(relay, "s3cret-pass", smtp_host="127.0.0.1", smtp_secure="none")
    )
    for body, field in (
        ({"api_key": "re_123"}, "api_key"),
        ({"region": "eu"}, "region"),
        ({"display_nmae": "typo"}, "display_nmae"),
        ({"smtp_port": "2525"}, "smtp_port"),
        ({"password": ""}, "password"),
        ({"display_name": None}, "display_name"),
    ):
        refusal = assert_refused(api.patch(provider["id"], body), "validation_error")
        assert refusal["field"] == field, (body, refusal)
        assert field in refusal["detail"]
    assert api.get(provider["id"]).json()["email_provider"] == {
        k: v for k, v in provider.items() if k != "warnings"
    }


# -- test sends ----------------------------------------------------------------------------------


def test_test_send_goes_through_the_relay(api: Api, smtp_server: SMTPServerFactory) -> None:
    """POST /v1/email-providers/{id}/test: the relay gets a real message From the provider's
    sender (never GetFluxly) with its Reply-To; the answer has the outcome, reply and timing."""
    password = new_password()
    relay = starttls_relay(smtp_server, password)
    provider = api.created(spec_body(relay, password))
    # The relay holds its reply to DATA 250 ms: the reported timing must include that wait.
    relay.faults.delay_reply_seconds = 0.25

    response = api.test_send(provider["id"], {"to": "you@yourdomain.com"})

    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["accepted"] is True
    assert outcome["to"] == "you@yourdomain.com"
    assert outcome["reply"].startswith("250")
    assert isinstance(outcome["elapsed_ms"], int)
    assert outcome["elapsed_ms"] >= 250
    [message] = relay.wait_for_messages(1)
    assert message.mail_from == "hello@yourdomain.com"
    assert message.rcpt_tos == ["you@yourdomain.com"]
    assert message.tls
    assert message.auth_user == USER
    headers = message.message
    assert parseaddr(str(headers["From"])) == ("Acme", "hello@yourdomain.com")
    assert "getfluxly" not in str(headers["From"]).lower()
    assert str(headers["Reply-To"]) == "support@yourdomain.com"
    assert str(headers["To"]) == "you@yourdomain.com"
    assert "Postmark Production" in str(headers["Subject"])
    api.assert_never_shown(password)


def test_test_send_rejected_by_the_relay(api: Api, smtp_server: SMTPServerFactory) -> None:
    """The relay answers DATA with 554: a 4xx with code ``rejected`` carrying its reply."""
    password = new_password()
    relay = starttls_relay(smtp_server, password, faults=Faults(permanent_failure=True))
    provider = api.created(spec_body(relay, password))
    detail = assert_refused(
        api.test_send(provider["id"], {"to": "you@yourdomain.com"}), "rejected"
    )["detail"]
    assert "554" in detail
    assert len(relay.rejected) == 1
    api.assert_never_shown(password)


def test_test_send_with_an_invalid_to_is_400(api: Api, smtp_server: SMTPServerFactory) -> None:
    """A bad recipient is the caller's mistake: 400 naming ``to``, and no connection made."""
    relay = starttls_relay(smtp_server, "s3cret-pass")
    provider = api.created(spec_body(relay, "s3cret-pass"))
    connections = relay.connections
    for body in (
        {"to": "not an address"},
        {"to": "you@yourdomain.com\r\nBcc: x@evil.test"},
        {"to": ""},
        {"to": ["you@yourdomain.com"]},
        {"too": "you@yourdomain.com"},
        {},
    ):
        response = api.test_send(provider["id"], body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"] == "validation_error", body
        assert response.json()["field"] == "to", body
    assert relay.connections == connections
    assert relay.messages == []


FROM_NAMES = {
    "comma": "Acme, Inc.",
    "non-ascii": "Café Ünïcode",
    "quote": 'Acme "Best"',
    "angle brackets": "Acme <support@acme.test>",
}


@pytest.mark.parametrize("from_name", FROM_NAMES.values(), ids=FROM_NAMES.keys())
def test_from_name_reaches_the_from_header_intact(
    api: Api, smtp_server: SMTPServerFactory, from_name: str
) -> None:
    """A from_name the API accepts must come out as exactly that display name (or be refused
    up front as a validation_error; never saved and then fail every send)."""
    relay = smtp_server(tls="none", auth=True)
    response = api.create(
        spec_body(
            relay, "s3cret-pass", smtp_host="127.0.0.1", smtp_secure="none", from_name=from_name
        )
    )
    if response.status_code == 400:
        assert response.json()["field"] == "from_name"
        return
    assert response.status_code == 201, response.text
    provider_id = response.json()["email_provider"]["id"]
    sent = api.test_send(provider_id, {"to": "you@yourdomain.com"})
    assert sent.status_code == 200, sent.text
    [message] = relay.wait_for_messages(1)
    [address] = message.message["From"].addresses
    assert (address.display_name, address.addr_spec) == (from_name, "hello@yourdomain.com")


def test_a_from_name_the_send_path_refuses_is_refused_on_save(
    api: Api, smtp_server: SMTPServerFactory
) -> None:
    """Issue 10, finding 8: a from_name with an RFC 2047 encoded word (which a mail reader
    would decode into other text) was saved, then every send failed. The save runs the send
    path's own check: 400 naming from_name, before any connection; nothing saved. A PATCH to
    such a name is refused the same way."""
    relay = smtp_server(tls="none", auth=True)
    body = spec_body(relay, "s3cret-pass", smtp_host="127.0.0.1", smtp_secure="none")
    for name in ("=?utf-8?q?Acme=0D=0ABcc:_x@evil.test?=", "Acme =?utf-8?b?QWNtZQ==?= Inc"):
        refusal = assert_refused(api.create({**body, "from_name": name}), "validation_error")
        assert refusal["field"] == "from_name"
        assert "encoded word" in refusal["detail"]
    assert relay.connections == 0
    assert api.listing() == []
    provider = api.created(body)
    refusal = assert_refused(
        api.patch(provider["id"], {"from_name": "=?utf-8?q?x?="}), "validation_error"
    )
    assert refusal["field"] == "from_name"
    assert api.get(provider["id"]).json()["email_provider"]["from_name"] == body["from_name"]


@pytest.mark.parametrize("field", ["display_name", "from_name"])
def test_names_longer_than_their_column_are_a_400_on_both_databases(
    api: Api, smtp_server: SMTPServerFactory, field: str
) -> None:
    """Issue 10, finding 4: the API took 320 characters where the column holds 200, and
    PostgreSQL answered 500. The limit is defined once (storage.models.NAME_MAX) for both:
    200 is saved, 201 and 320 are 400 naming the field, on SQLite and PostgreSQL alike."""
    from getfluxly_server.storage.models import NAME_MAX

    assert NAME_MAX == 200
    relay = smtp_server(tls="none", auth=True)
    body = spec_body(relay, "s3cret-pass", smtp_host="127.0.0.1", smtp_secure="none")
    for length in (NAME_MAX + 1, 320):
        refusal = assert_refused(api.create({**body, field: "n" * length}), "validation_error")
        assert refusal["field"] == field
        assert str(NAME_MAX) in refusal["detail"]
    saved = api.created({**body, field: "n" * NAME_MAX})
    assert saved[field] == "n" * NAME_MAX
    patched = api.patch(saved["id"], {field: "m" * (NAME_MAX + 1)})
    assert assert_refused(patched, "validation_error")["field"] == field


def test_smtp_host_cannot_override_smtp_port(api: Api, plain_smtp: SMTPTestServer) -> None:
    body = {
        **SPEC_BODY,
        "smtp_host": f"127.0.0.1:{plain_smtp.port}",
        "smtp_port": closed_port(),
        "smtp_secure": "none",
    }
    response = api.create(body)
    # Either refuse the host outright, or connect where smtp_port says (nothing listens).
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"] in ("validation_error", "connection_refused")


def test_smtp_host_with_an_out_of_range_port_suffix_is_a_validation_error(api: Api) -> None:
    body = {**SPEC_BODY, "smtp_host": "127.0.0.1:99999", "smtp_secure": "none"}
    refusal = assert_refused(api.create(body), "validation_error")
    assert refusal["field"] == "smtp_host"


def test_ipv6_literal_host_is_tried(api: Api) -> None:
    body = {**SPEC_BODY, "smtp_host": "::1", "smtp_port": closed_port(), "smtp_secure": "none"}
    assert_refused(api.create(body), "connection_refused")


# -- the multi-tenant guard ---------------------------------------------------------------------


# The guard refuses before the database is written, so one backend is enough: overriding the
# harness's gf_backend saves a server start and a PostgreSQL database.
@pytest.mark.parametrize("gf_backend", ["sqlite"])
def test_multi_tenant_guard_refuses_private_relays(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    """With GETFLUXLY_MULTI_TENANT_GUARD=true a loopback relay is refused before any
    connection is made, answered as a closed port would be (connection_refused: the guard is
    no port scanner), and nothing is saved. (That a provider saved before the guard was turned
    on cannot send either is checked in the domain layer below; every spelling of a private
    address, on both databases, in test_netguard.py.)"""
    password = new_password()
    relay = starttls_relay(smtp_server, password)
    api = Api(gf_server_factory(env=GUARD_ENV))
    for host in ("127.0.0.1", "localhost"):
        detail = assert_refused(
            api.create(spec_body(relay, password, smtp_host=host)), "connection_refused"
        )["detail"]
        assert "GETFLUXLY_MULTI_TENANT_GUARD" not in detail
    assert relay.connections == 0
    assert api.listing() == []
    api.assert_never_shown(password)
    api.http.close()


# -- the domain layer: what would happen with public hosts (no traffic) --------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name resolution or connection fails the test, and FluxMail's connection check
    pretends the relay answered: verify() then runs everything but the network part."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(FluxMail, "test_connection", lambda self: {"ok": True})


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(
    ("host", "secure", "warned"),
    [
        ("smtp.postmarkapp.com", "none", True),
        ("8.8.8.8", "none", True),
        ("smtp.postmarkapp.com", "starttls", False),
        ("smtp.postmarkapp.com", "ssl", False),
        ("127.0.0.1", "none", False),
        ("localhost", "none", False),
        ("10.0.0.25", "none", False),
        ("192.168.1.10", "none", False),
        ("::1", "none", False),
        ("mailrelay", "none", False),
    ],
)
def test_plaintext_to_a_public_host_is_saved_with_a_warning(
    host: str, secure: str, warned: bool
) -> None:
    """Spec: "public hosts on plaintext get a warning in the response". Through the domain
    layer, as the API calls it, with sockets disabled."""
    password = new_password()
    body = {**SPEC_BODY, "smtp_host": host, "smtp_secure": secure, "password": password}
    warnings = domain.verify(domain.parse(body), BuildContext())
    if warned:
        [warning] = warnings
        assert host in warning
        assert "unencrypted" in warning
        assert "starttls" in warning
        assert password not in warning
    else:
        assert warnings == []


@pytest.mark.parametrize(
    ("host", "public"),
    [
        ("smtp.postmarkapp.com", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.5.6.7", False),
        ("localhost", False),
        ("LOCALHOST", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd12::1", False),
        ("mailrelay", False),
        ("127.1", False),
    ],
)
def test_is_public_host(host: str, public: bool) -> None:
    assert is_public_host(host) is public


def test_guard_also_applies_when_sending(smtp_server: SMTPServerFactory) -> None:
    """A provider saved before the operator turned the guard on must not send through a
    private relay afterwards: send() checks the host again (the worker's path)."""
    relay = smtp_server(tls="none", auth=True)
    body = {**SPEC_BODY, "smtp_host": "127.0.0.1", "smtp_port": relay.port}
    draft = domain.parse({**body, "smtp_secure": "none", "password": "s3cret-pass"})
    draft = replace(draft, config={**draft.config, "username": USER})
    email = domain.test_email(draft, "you@yourdomain.com")
    assert draft.client(BuildContext(timeout=2)).send(email).reply.startswith("250")
    with pytest.raises(DeliveryError) as refused:
        draft.client(BuildContext(timeout=2, network=NetworkPolicy(guard=True))).send(email)
    assert refused.value.code == "connection_refused"
    assert len(relay.messages) == 1
    assert relay.connections == 1  # refused before connecting


def test_domain_refusals_carry_the_contract_codes() -> None:
    """verify() turns a delivery failure into a DomainError with the same code (what the API
    answers); checked with a closed local port."""
    password = new_password()
    draft = domain.parse(
        {**SPEC_BODY, "smtp_host": "127.0.0.1", "smtp_port": closed_port(), "password": password}
    )
    with pytest.raises(DomainError) as refused:
        domain.verify(draft, BuildContext(timeout=2))
    assert refused.value.code == "connection_refused"
    assert password not in refused.value.detail
    assert password not in repr(draft)  # secrets stay out of reprs, and so out of logs
