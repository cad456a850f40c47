"""The domain check (``GET /v1/email-providers/{id}/domain-check``) against a real DNS
server on loopback (``flux_testkit.dnsd``), through dnspython as the server uses it.

Contract: for the provider's from domain, SPF (one ``v=spf1`` record, including the known
relay's SPF domain directly or through another include, within 10 DNS lookups, not
``+all``), DKIM (the given selector, else the relay's, else common ones; ``p=`` not
empty), DMARC (one ``v=DMARC1`` record with a policy, at the domain or a parent); each
``ok``, ``missing`` or ``wrong``, and unless ok the exact record to publish.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flux_testkit.dnsd import DNSTestServer
from flux_testkit.gfserver import GFServer, expect_error
from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory
from getfluxly_server.domain import domain_check
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.storage.models import EmailProvider

KEY = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDsample+key/material"


@pytest.fixture
def dns_server() -> Iterator[DNSTestServer]:
    with DNSTestServer() as server:
        yield server


def _provider(kind: str, from_email: str, host: str | None = None) -> EmailProvider:
    config = {"smtp_host": host} if host else {}
    return EmailProvider(id="prv_test", provider=kind, from_email=from_email, config=config)


def _check(
    server: DNSTestServer, provider: EmailProvider, selector: str | None = None
) -> domain_check.DomainReport:
    return domain_check.check(provider, domain_check.resolver(server.address), selector)


def test_a_domain_set_up_for_its_relay_is_ok(dns_server: DNSTestServer) -> None:
    dns_server.add("example.com", "TXT", "google-site-verification=abc")  # not SPF: ignored
    dns_server.add("example.com", "TXT", "v=spf1 include:_spf.example.com ~all")
    dns_server.add("_spf.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 include:sendgrid.net -all")
    dns_server.add("sendgrid.net", "TXT", "v=spf1 ip4:198.51.100.0/24 ~all")
    dns_server.add("s1._domainkey.example.com", "CNAME", "s1.domainkey.u1.wl1.sendgrid.net")
    dns_server.add("s1.domainkey.u1.wl1.sendgrid.net", "TXT", f"k=rsa; t=s; p={KEY}")
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:d@example.com")

    report = _check(dns_server, _provider("sendgrid", "news@Example.com"))

    assert (report.domain, report.relay) == ("example.com", "sendgrid")
    assert (report.spf.status, report.spf.lookups, report.spf.publish) == ("ok", 2, None)
    assert report.spf.found == ["v=spf1 include:_spf.example.com ~all"]
    assert (report.dkim.status, report.dkim.selector) == ("ok", "s1")
    assert report.dkim.name == "s1._domainkey.example.com"
    assert (report.dmarc.status, report.dmarc.policy) == ("ok", "quarantine")


def test_nothing_published_is_missing_with_the_records_to_publish(
    dns_server: DNSTestServer,
) -> None:
    report = _check(dns_server, _provider("mailgun", "hello@bare.example"))

    assert [report.spf.status, report.dkim.status, report.dmarc.status] == ["missing"] * 3
    assert report.spf.publish == domain_check.Record(
        "TXT", "bare.example", "v=spf1 include:mailgun.org ~all"
    )
    assert report.dkim.publish is not None
    assert report.dkim.publish.name == "smtp._domainkey.bare.example"
    assert report.dkim.publish.value.startswith("v=DKIM1; k=rsa; p=")
    assert report.dmarc.publish == domain_check.Record(
        "TXT", "_dmarc.bare.example", "v=DMARC1; p=none; rua=mailto:dmarc-reports@bare.example"
    )


def test_spf_without_the_relays_include_is_wrong_and_the_fix_keeps_the_rest(
    dns_server: DNSTestServer,
) -> None:
    dns_server.add("example.com", "TXT", "v=spf1 mx ip4:192.0.2.1 -all")
    report = _check(dns_server, _provider("postmark", "a@example.com"))
    assert report.spf.status == "wrong"
    assert "spf.mtasv.net" in report.spf.detail
    assert report.spf.publish == domain_check.Record(
        "TXT", "example.com", "v=spf1 mx ip4:192.0.2.1 include:spf.mtasv.net -all"
    )


def test_two_spf_records_are_wrong_and_merged(dns_server: DNSTestServer) -> None:
    dns_server.add("example.com", "TXT", "v=spf1 include:amazonses.com ~all")
    dns_server.add("example.com", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    report = _check(dns_server, _provider("ses", "a@example.com"))
    assert report.spf.status == "wrong"
    assert report.spf.publish is not None
    assert report.spf.publish.value == "v=spf1 include:amazonses.com ip4:192.0.2.1 -all"


def test_spf_over_ten_lookups_is_wrong(dns_server: DNSTestServer) -> None:
    # 2 includes at the top, then a, mx and an include in each of a, b and c (11), then d's a:
    # a receiver stops at the 11th (permerror), and so does the count.
    dns_server.add("example.com", "TXT", "v=spf1 include:amazonses.com include:a.example.com ~all")
    dns_server.add("amazonses.com", "TXT", "v=spf1 ip4:203.0.113.0/24 ~all")
    for name, then in (("a", "b"), ("b", "c"), ("c", "d")):
        dns_server.add(f"{name}.example.com", "TXT", f"v=spf1 a mx include:{then}.example.com ~all")
    dns_server.add("d.example.com", "TXT", "v=spf1 a ~all")
    report = _check(dns_server, _provider("ses", "a@example.com"))
    assert report.spf.status == "wrong"
    assert report.spf.lookups == 11
    assert "11 DNS lookups, over the limit of 10" in report.spf.detail


def test_spf_plus_all_is_wrong(dns_server: DNSTestServer) -> None:
    dns_server.add("example.com", "TXT", "v=spf1 include:spf.brevo.com +all")
    dns_server.add("spf.brevo.com", "TXT", "v=spf1 ip4:203.0.113.0/24 ~all")
    report = _check(dns_server, _provider("smtp", "a@example.com", "smtp-relay.brevo.com"))
    assert report.relay == "brevo"
    assert report.spf.status == "wrong"
    assert report.spf.publish is not None
    assert report.spf.publish.value == "v=spf1 include:spf.brevo.com ~all"


def test_resend_spf_is_checked_at_its_send_subdomain(dns_server: DNSTestServer) -> None:
    dns_server.add("send.example.com", "TXT", "v=spf1 include:amazonses.com ~all")
    dns_server.add("amazonses.com", "TXT", "v=spf1 ip4:203.0.113.0/24 ~all")
    dns_server.add("resend._domainkey.example.com", "TXT", f"p={KEY}")
    report = _check(dns_server, _provider("resend", "a@example.com"))
    assert (report.spf.status, report.spf.name) == ("ok", "send.example.com")
    assert (report.dkim.status, report.dkim.selector) == ("ok", "resend")


def test_a_revoked_dkim_key_and_a_bad_dmarc_policy_are_wrong(dns_server: DNSTestServer) -> None:
    dns_server.add("sel1._domainkey.example.com", "TXT", "v=DKIM1; k=rsa; p=")
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=block")
    report = _check(dns_server, _provider("smtp", "a@example.com", "127.0.0.1"), "sel1")
    assert (report.dkim.status, report.dkim.selector) == ("wrong", "sel1")
    assert "revoked" in report.dkim.detail
    assert report.dmarc.status == "wrong"
    assert report.dmarc.publish is not None
    assert report.dmarc.publish.value.startswith("v=DMARC1; p=none")
    # An unknown relay on an IP: SPF to publish names that address.
    assert report.relay is None
    assert report.spf.publish is not None
    assert report.spf.publish.value == "v=spf1 ip4:127.0.0.1 ~all"


def test_two_dmarc_records_are_wrong(dns_server: DNSTestServer) -> None:
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    assert _check(dns_server, _provider("ses", "a@example.com")).dmarc.status == "wrong"


def test_a_parents_dmarc_policy_covers_a_subdomain(dns_server: DNSTestServer) -> None:
    dns_server.add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
    report = _check(dns_server, _provider("ses", "a@mail.example.org"))
    assert (report.dmarc.status, report.dmarc.policy) == ("ok", "reject")
    assert report.dmarc.name == "_dmarc.example.org"


def test_relays_are_recognised_from_their_smtp_hosts() -> None:
    cases = {
        "email-smtp.eu-west-1.amazonaws.com": "ses",
        "smtp.sendgrid.net": "sendgrid",
        "smtp.eu.mailgun.org": "mailgun",
        "smtp.postmarkapp.com": "postmark",
        "live.smtp.mailtrap.io": "mailtrap",
        "smtp.gmail.com": "google",
        "mail.example.com": None,
        "notsendgrid.net": None,
    }
    for host, relay in cases.items():
        assert domain_check.relay_of(_provider("smtp", "a@example.com", host)) == relay, host


def test_dns_that_does_not_answer_is_a_clear_error() -> None:
    silent = DNSTestServer()  # bound, never started: queries go unanswered
    try:
        lookup = domain_check.resolver(silent.address, timeout=0.5)
        with pytest.raises(DomainError) as raised:
            lookup("example.com")
        assert raised.value.code == "dns_unavailable"
    finally:
        silent.stop()


def test_the_endpoint_checks_the_providers_domain(
    gf_server_factory: GFServerFactory,
    smtp_server: SMTPServerFactory,
    dns_server: DNSTestServer,
) -> None:
    server: GFServer = gf_server_factory(
        env={"GETFLUXLY_DNS_RESOLVER": dns_server.resolver_setting}
    )
    relay = smtp_server(tls="none", auth=True)
    project = server.create_project("Domain check")
    provider = server.create_smtp_provider(project.id, relay.host, relay.port)  # hello@example.com
    path = f"/v1/email-providers/{provider['id']}/domain-check"
    owner = server.client()

    missing = owner.get(path)
    assert missing.status_code == 200, missing.text
    report = missing.json()["domain_check"]
    assert (report["provider_id"], report["domain"], report["relay"]) == (
        provider["id"], "example.com", None,
    )  # fmt: skip
    assert [report[k]["status"] for k in ("spf", "dkim", "dmarc")] == ["missing"] * 3
    assert report["spf"]["publish"] == {
        "type": "TXT", "name": "example.com", "value": "v=spf1 ip4:127.0.0.1 ~all",
    }  # fmt: skip

    dns_server.add("example.com", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.add("gf2026._domainkey.example.com", "TXT", f"v=DKIM1; k=rsa; p={KEY}")
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    ok = owner.get(path, params={"dkim_selector": "gf2026"}).json()["domain_check"]
    assert [ok[k]["status"] for k in ("spf", "dkim", "dmarc")] == ["ok"] * 3
    assert (ok["spf"]["lookups"], ok["dkim"]["selector"], ok["dmarc"]["policy"]) == (
        0, "gf2026", "reject",
    )  # fmt: skip
    assert ok["spf"]["publish"] is None
    assert ("gf2026._domainkey.example.com", "TXT") in dns_server.queries

    expect_error(owner.get(path, params={"dkim_selector": "no good"}), 400, "validation_error")
    expect_error(owner.get("/v1/email-providers/prv_00000000000000000000/domain-check"), 404,
                 "not_found")  # fmt: skip
    other = server.create_workspace()
    expect_error(server.client(other.key).get(path), 404, "not_found")
