"""Issue 10 finding 2: the multi-tenant guard (GETFLUXLY_MULTI_TENANT_GUARD) and its
allow-list (GETFLUXLY_PRIVATE_RELAY_ALLOWLIST).

- The address policy on its own: every spelling of a private address is refused once
  resolved, IPv6 forms that embed a private IPv4 address too, public ones pass, the guard off
  changes nothing.
- At connect time, through the real SMTP and HTTP clients: one lookup per connection, the
  connection goes to the checked address, a public-looking name that resolves to loopback is
  refused, a refusal reads exactly as a closed port does.
- Through the API on SQLite and PostgreSQL: each spelling refused and nothing saved, the
  allow-listed host accepted and usable, the startup log says which mode is on.
- Settings: a bad allow-list entry fails at boot naming the variable.
- Dev mode starts with the guard on, its catcher allowed by its exact address only.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from flux_testkit.provider_fakes import PostmarkFake
from flux_testkit.smtpd import SMTPTestServer, closed_port
from getfluxly_server.delivery.base import BuildContext, DeliveryError, Outcome, OutgoingEmail
from getfluxly_server.delivery.netguard import NetworkPolicy, embedded_ipv4, is_refused
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

GUARD = NetworkPolicy(guard=True)
#: Spellings of non-public addresses; each is refused once resolved (no DNS query: numeric).
REFUSED = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1", "127.255.255.254",
    "0", "0.0.0.0", "10.1",  # noqa: S104 - addresses to refuse, not to bind "10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "198.18.0.1", "192.0.0.8", "192.0.2.1", "224.0.0.1", "239.1.2.3",
    "240.0.0.1", "255.255.255.255",
    "::1", "::", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "::127.0.0.1",
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a00:1::",
    "2001::1", "2001:db8::1", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
EMAIL = OutgoingEmail(from_email="hello@example.com", to=("ann@example.org",), subject="s",
                      text="x", message_id="msg_guard")  # fmt: skip


@pytest.fixture
def numeric_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo for numeric hosts only (AI_NUMERICHOST): nothing may query DNS."""
    real = socket.getaddrinfo

    def numeric(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["flags"] = kwargs.get("flags", 0) | socket.AI_NUMERICHOST
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", numeric)


class Resolver:
    """A stand-in DNS: names map to fixed answers; every lookup is counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
        self.answers, self.lookups = answers, []
        real = socket.getaddrinfo

        def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            self.lookups.append(host)
            if host in self.answers:
                return [
                    info
                    for address in self.answers[host]
                    for info in real(address, port, *args, **kwargs)
                ]
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", lookup)


# -- the policy -----------------------------------------------------------------------------


@pytest.mark.usefixtures("numeric_only")
@pytest.mark.parametrize("host", REFUSED)
def test_every_spelling_of_a_private_address_is_refused(host: str) -> None:
    with pytest.raises(ConnectionRefusedError):
        GUARD.addresses(host, 25)
    assert NetworkPolicy().addresses(host, 25)  # guard off: unchanged


@pytest.mark.usefixtures("numeric_only")
@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_pass(host: str) -> None:
    assert GUARD.addresses(host, 25) == [str(ipaddress.ip_address(host))]


def test_embedded_ipv4_forms() -> None:
    v6 = ipaddress.IPv6Address
    assert embedded_ipv4(v6("::ffff:10.0.0.1")) == ipaddress.IPv4Address("10.0.0.1")
    assert embedded_ipv4(v6("::10.0.0.1")) == ipaddress.IPv4Address("10.0.0.1")
    assert embedded_ipv4(v6("2002:0a00:0001::")) == ipaddress.IPv4Address("10.0.0.1")
    assert embedded_ipv4(v6("64:ff9b::0a00:1")) == ipaddress.IPv4Address("10.0.0.1")
    assert embedded_ipv4(v6("::1")) is None
    assert embedded_ipv4(v6("2606:4700::1")) is None
    assert is_refused(ipaddress.ip_address("fe80::1%2"))


@pytest.mark.usefixtures("numeric_only")
def test_the_allow_list_lets_named_hosts_and_networks_through() -> None:
    hosts, networks = NetworkPolicy.parse_allowlist(
        " Relay.Internal. ,10.20.0.0/16, fd00::/8,192.168.1.7"
    )
    assert hosts == {"relay.internal"}
    assert [str(n) for n in networks] == ["10.20.0.0/16", "fd00::/8", "192.168.1.7/32"]
    policy = NetworkPolicy(guard=True, allowed_hosts=hosts, allowed_networks=networks)
    assert policy.addresses("10.20.3.4", 25) == ["10.20.3.4"]
    assert policy.addresses("192.168.1.7", 25) == ["192.168.1.7"]
    for outside in ("10.21.0.1", "192.168.1.8", "127.0.0.1"):
        with pytest.raises(ConnectionRefusedError):
            policy.addresses(outside, 25)
    exact = GUARD.with_endpoint("127.0.0.1", 2525)
    assert exact.addresses("127.0.0.1", 2525) == ["127.0.0.1"]
    with pytest.raises(ConnectionRefusedError):
        exact.addresses("127.0.0.1", 2526)  # the catcher's port only
    assert "guard on" in exact.describe()
    assert "127.0.0.1:2525" in exact.describe()
    assert "guard off" in NetworkPolicy().describe()


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "300.1.2.3/8", "fd00::/129", "bad_host!", "a..b", "-x.com"]
)
def test_a_bad_allow_list_entry_fails_at_boot(entry: str, tmp_path: Path) -> None:
    env = {
        "GETFLUXLY_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "GETFLUXLY_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
        "GETFLUXLY_PRIVATE_RELAY_ALLOWLIST": f"relay.internal,{entry}",
    }
    with pytest.raises(SettingsError) as failed:
        Settings.from_env(env)
    [problem] = [p for p in failed.value.problems if "ALLOWLIST" in p]
    assert problem.startswith("GETFLUXLY_PRIVATE_RELAY_ALLOWLIST")
    assert repr(entry) in problem


def test_settings_carry_the_policy(tmp_path: Path) -> None:
    env = {
        "GETFLUXLY_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "GETFLUXLY_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
        "GETFLUXLY_MULTI_TENANT_GUARD": "true",
        "GETFLUXLY_PRIVATE_RELAY_ALLOWLIST": "relay.internal,10.9.0.0/16",
    }
    policy = Settings.from_env(env).network_policy
    assert policy.guard
    assert policy.allowed_hosts == {"relay.internal"}
    assert (
        Settings.from_env({**env, "GETFLUXLY_MULTI_TENANT_GUARD": "false"}).network_policy.guard
        is False
    )


# -- at connect time ---------------------------------------------------------------------------


def smtp_client(host: str, port: int, network: NetworkPolicy) -> Any:
    config = {"smtp_host": host, "smtp_port": port, "smtp_secure": "none", "username": "u"}
    return PROVIDERS["smtp"].build(
        config, {"password": "p"}, BuildContext(timeout=3, network=network)
    )


def test_a_public_name_resolving_to_loopback_is_refused_before_connecting(
    plain_smtp: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = Resolver(monkeypatch, {"mail.attacker.example": ["127.0.0.1"]})
    with pytest.raises(DeliveryError) as refused:
        smtp_client("mail.attacker.example", plain_smtp.port, GUARD).verify()
    assert refused.value.code == "connection_refused"
    assert plain_smtp.connections == 0
    assert dns.lookups == ["mail.attacker.example"]


def test_one_lookup_per_connection_and_the_checked_address_is_used(
    smtp_server: SMTPServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once, checked, and the socket goes to that very address: a DNS
    answer that changes afterwards (rebinding) is never consulted."""
    relay = smtp_server(auth=True, auth_require_tls=False, users={"u": "p"})
    dns = Resolver(monkeypatch, {"relay.internal": ["127.0.0.1"]})
    allowed = NetworkPolicy(guard=True, allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    with smtp_client("relay.internal", relay.port, allowed) as client:
        dns.answers["relay.internal"] = ["10.66.0.1"]  # would be refused, and is never asked
        with pytest.raises(ConnectionRefusedError):
            allowed.addresses("relay.internal", relay.port)
        dns.answers["relay.internal"] = ["127.0.0.1"]
        dns.lookups.clear()
        assert client.send(EMAIL).ok
    # One name lookup; the connect then goes to the checked IP literal (no query for that).
    assert [h for h in dns.lookups if h == "relay.internal"] == ["relay.internal"]
    assert set(dns.lookups) <= {"relay.internal", "127.0.0.1"}
    assert len(relay.messages) == 1


@pytest.mark.usefixtures("numeric_only")
def test_a_guard_refusal_reads_exactly_as_a_closed_port(plain_smtp: SMTPTestServer) -> None:
    port = closed_port()
    allowed = NetworkPolicy(guard=True, allowed_hosts=frozenset({"127.0.0.1"}))
    with pytest.raises(DeliveryError) as really_closed:
        smtp_client("127.0.0.1", port, allowed).verify()
    with pytest.raises(DeliveryError) as guarded:
        smtp_client("127.0.0.1", port, GUARD).verify()
    assert guarded.value.code == really_closed.value.code == "connection_refused"
    assert guarded.value.detail == really_closed.value.detail
    # And an open port behind the guard is refused the same way, without a connection.
    with pytest.raises(DeliveryError) as open_but_guarded:
        smtp_client("127.0.0.1", plain_smtp.port, GUARD).verify()
    assert open_but_guarded.value.detail == really_closed.value.detail.replace(
        str(port), str(plain_smtp.port)
    )
    assert plain_smtp.connections == 0


def test_the_guard_applies_to_http_api_urls_by_resolved_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with PostmarkFake() as fake:
        Resolver(monkeypatch, {"api.attacker.example": ["127.0.0.1"]})
        for url in (
            fake.url, f"http://localhost:{fake.port}", f"https://api.attacker.example:{fake.port}"
        ):  # fmt: skip
            client = PROVIDERS["postmark"].build(
                {"api_url": url}, {"server_token": fake.server_token},
                BuildContext(timeout=3, network=GUARD),
            )  # fmt: skip
            with pytest.raises(DeliveryError) as refused:
                client.verify()
            assert refused.value.code == "connection_refused", url
            assert client.deliver(EMAIL).outcome is Outcome.TRANSIENT
        assert fake.requests == []


# -- through the API, on SQLite and PostgreSQL ------------------------------------------------


class Api:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.project_id = server.create_project().id
        self.http: httpx.Client = server.client()

    def create(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/v1/projects/{self.project_id}/email-providers", json=body)

    def listing(self) -> list[dict[str, Any]]:
        answer = self.http.get(f"/v1/projects/{self.project_id}/email-providers")
        return list(answer.json()["email_providers"])


def smtp_body(host: str, port: int, **changes: Any) -> dict[str, Any]:
    body = {
        "provider": "smtp", "display_name": "In-house relay", "from_email": "hello@example.com",
        "smtp_host": host, "smtp_port": port, "smtp_secure": "none", "username": "u",
        "password": "s3cret-guarded",
    }  # fmt: skip
    return {**body, **changes}


API_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1",
                 "::ffff:127.0.0.1", "::1", "0.0.0.0", "169.254.169.254"]  # noqa: S104 # fmt: skip


def test_the_api_refuses_every_spelling_and_accepts_the_allow_listed_host(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    relay = smtp_server(auth=True, auth_require_tls=False, users={"u": "s3cret-guarded"})
    server = gf_server_factory(env={
        "GETFLUXLY_MULTI_TENANT_GUARD": "true",
        "GETFLUXLY_PRIVATE_RELAY_ALLOWLIST": "localhost",
        "GETFLUXLY_SMTP_TIMEOUT": "2",
    })  # fmt: skip
    api = Api(server)
    try:
        closed = api.create(smtp_body("localhost", closed_port()))
        assert 400 <= closed.status_code < 500, closed.text
        reference = closed.json()
        assert reference["error"] == "connection_refused"
        for host in API_SPELLINGS:
            answer = api.create(smtp_body(host, relay.port))
            assert answer.status_code == closed.status_code, (host, answer.text)
            body = answer.json()
            assert body["error"] == "connection_refused", (host, body)
            assert "guard" not in body["detail"].lower()
            assert (
                body["detail"].split(" was refused")[1]
                == reference["detail"].split(" was refused")[1]
            )  # the same words as a closed port
        http = api.create({
            "provider": "postmark", "display_name": "Postmark", "from_email": "hello@example.com",
            "server_token": "tok", "api_url": f"http://127.0.0.1:{relay.port}",
        })  # fmt: skip
        assert (http.status_code, http.json()["error"]) == (
            closed.status_code,
            "connection_refused",
        )
        assert relay.connections == 0
        assert api.listing() == []

        saved = api.create(smtp_body("localhost", relay.port))  # allow-listed by name
        assert saved.status_code == 201, saved.text
        provider_id = saved.json()["email_provider"]["id"]
        sent = api.http.post(
            f"/v1/email-providers/{provider_id}/test", json={"to": "a@example.org"}
        )
        assert sent.status_code == 200, sent.text
        [message] = relay.wait_for_messages(1)
        assert message.rcpt_tos == ["a@example.org"]
        # Moving it to a private address is verified again, and refused the same way.
        moved = api.http.patch(f"/v1/email-providers/{provider_id}", json={"smtp_host": "127.1"})
        assert (moved.status_code, moved.json()["error"]) == (
            closed.status_code,
            "connection_refused",
        )
        kept = api.http.get(f"/v1/email-providers/{provider_id}").json()["email_provider"]
        assert kept["smtp_host"] == "localhost"
        logs = server.logs()
        assert "multi-tenant guard on" in logs
        assert "localhost" in logs.split("multi-tenant guard on", 1)[1].splitlines()[0]
        assert "s3cret-guarded" not in logs
    finally:
        api.http.close()


# -- dev mode ----------------------------------------------------------------------------------

GETFLUXLY = Path(sys.executable).with_name("getfluxly")


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@pytest.fixture
def dev_with_guard(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    port = _free_port()
    env = {name: os.environ[name] for name in ("HOME", "PATH") if name in os.environ}
    env["GETFLUXLY_MULTI_TENANT_GUARD"] = "true"
    out, err = tmp_path / "dev.out", tmp_path / "dev.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(GETFLUXLY), "dev", "--port", str(port), "--smtp-port", "0",
             "--data-dir", str(tmp_path / "data")],
            stdout=stdout, stderr=stderr, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        exports: dict[str, str] = {}
        while True:
            assert process.poll() is None, err.read_text()
            lines = out.read_text().splitlines()
            if len(lines) >= 6:
                exports = dict(line.split("=", 1) for line in lines)
                try:
                    httpx.get(f"{exports['GETFLUXLY_URL']}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        yield exports, err
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_dev_mode_starts_with_the_guard_on_and_its_catcher_allowed(
    dev_with_guard: tuple[dict[str, str], Path], plain_smtp: SMTPTestServer
) -> None:
    exports, stderr = dev_with_guard
    headers = {"Authorization": f"Bearer {exports['GETFLUXLY_WORKSPACE_KEY']}"}
    with httpx.Client(base_url=exports["GETFLUXLY_URL"], headers=headers, timeout=30) as http:
        project = exports["GETFLUXLY_PROJECT_ID"]
        [catcher] = http.get(f"/v1/projects/{project}/email-providers").json()["email_providers"]
        test = f"/v1/email-providers/{catcher['id']}/test"
        sent = http.post(test, json={"to": "a@example.org"})
        assert sent.status_code == 200, sent.text
        # Only the catcher: another relay on this machine stays refused.
        other = http.post(f"/v1/projects/{project}/email-providers",
                          json=smtp_body("127.0.0.1", plain_smtp.port))  # fmt: skip
        assert 400 <= other.status_code < 500, other.text
        assert other.json()["error"] == "connection_refused"
    assert plain_smtp.connections == 0
    assert "multi-tenant guard on" in stderr.read_text()


@pytest.fixture
def https_server() -> Iterator[int]:
    """A tiny HTTPS server on 127.0.0.1 with the testkit's certificate (valid for localhost)."""
    import http.server
    import threading

    from flux_testkit.certs import server_ssl_context

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_ssl_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_guarded_https_checks_the_certificate_against_the_name(
    https_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guarded transport connects to the checked IP but TLS still verifies the URL's host
    name: the certificate is for localhost, so reaching the same IP under another name fails."""
    from flux_testkit.certs import client_ssl_context
    from getfluxly_server.delivery.netguard import GuardedHTTPTransport

    Resolver(monkeypatch, {"other.example": ["127.0.0.1"]})
    allowed = NetworkPolicy(guard=True, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    transport = GuardedHTTPTransport(allowed, verify=client_ssl_context())
    with httpx.Client(transport=transport) as client:
        assert client.get(f"https://localhost:{https_server}/").text == "ok"
        with pytest.raises(httpx.ConnectError) as mismatch:
            client.get(f"https://other.example:{https_server}/")
    assert "certificate" in str(mismatch.value).lower() or "hostname" in str(mismatch.value)
    with (
        httpx.Client(transport=GuardedHTTPTransport(GUARD, verify=client_ssl_context())) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(f"https://localhost:{https_server}/")  # not allow-listed: refused
