"""The dashboard's settings pages of the feedback loop, over HTTP against the real server on
SQLite and PostgreSQL: inbound webhook secrets (each relay's URL; a secret GetFluxly makes
shown once and verifying a real signed post; one the relay makes typed in and never shown
back; removal refusing posts), outbound endpoints (the signing secret shown once; an event
posted to the inbound webhook fans out to a local endpoint, signed, and shows in the
delivery log), subscription groups, and a provider's domain check against a DNS server on
loopback (the same verdicts and records as the API's).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flux_testkit.dashboard import DashboardClient, GFUser, create_user, signed_in
from flux_testkit.dnsd import DNSTestServer
from flux_testkit.gfserver import GFProject, GFServer, Harness
from flux_testkit.outbound import Receiver, verify_signature
from flux_testkit.pytest_fixtures import SMTPServerFactory
from flux_testkit.waiting import eventually
from flux_testkit.webhook_signers import standard_headers
from getfluxly_server.domain.feedback.relays import NAMES

pytestmark = pytest.mark.timeout(300)
DKIM_KEY = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDsample+key/material"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DNSTestServer]:
    with DNSTestServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest,
    gf_harness: Harness,
    tmp_path_factory: pytest.TempPathFactory,
    dns_server: DNSTestServer,
) -> Iterator[GFServer]:
    """One ``serve`` per backend for the module, asking the loopback DNS server."""
    directory = tmp_path_factory.mktemp(f"dash-settings-{request.param}")
    database = gf_harness.database(request.param, directory / "db")
    running = GFServer(
        gf_harness, database, directory / "logs",
        env={"GETFLUXLY_DNS_RESOLVER": dns_server.resolver_setting},
    )  # fmt: skip
    try:
        yield running.start()
    finally:
        running.close()
        database.close()


@pytest.fixture
def project(server: GFServer) -> GFProject:
    return server.create_project("Settings project")


@pytest.fixture(scope="module")
def admin(server: GFServer) -> GFUser:
    return create_user(server, "admin")


@pytest.fixture
def client(server: GFServer, admin: GFUser) -> Iterator[DashboardClient]:
    opened = signed_in(server, admin)
    try:
        yield opened
    finally:
        opened.close()


def shown_once(page: str, element_id: str) -> str:
    found = re.search(rf'<code id="{element_id}">([^<]+)</code>', page)
    assert found is not None, page[-3000:]
    return html.unescape(found[1])


def post_generic(server: GFServer, project_id: str, secret: str, event: dict[str, Any]) -> int:
    """A relay's signed post to ``/webhooks/smtp/{project_id}`` (GetFluxly's schema)."""
    body = json.dumps({"events": [event]}).encode()
    headers = standard_headers(secret, f"dlv-{event['id']}", int(time.time()), body)
    answer = server.anonymous_client().post(
        f"/webhooks/smtp/{project_id}",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    return answer.status_code


def test_each_relays_url_is_shown_and_a_made_secret_verifies_posts(
    server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    path = f"/projects/{project.id}/settings/webhooks"
    page = client.get(path)
    assert page.status_code == 200
    for relay in NAMES:
        assert f'data-relay="{relay}">{server.url}/webhooks/{relay}/{project.id}</code>' in (
            page.text
        ), relay
    assert page.text.count('data-configured="no"') == len(NAMES)

    made = client.post(path, {"relay": "smtp"})
    assert made.status_code == 201, made.text[-2000:]
    secret = shown_once(made.text, "issued-secret-value")
    assert secret.startswith("whsec_")
    assert f"{server.url}/webhooks/smtp/{project.id}" in made.text
    event = {"id": "evt-1", "type": "delivered", "email": "reader@example.com",
             "timestamp": int(time.time())}  # fmt: skip
    assert post_generic(server, project.id, secret, event) == 200
    listed = client.get(path).text
    assert secret not in listed
    assert re.search(r'id="relay-smtp".*?data-configured="yes"', listed, re.S)
    assert "Rotate secret" in listed

    # Rotating: the new secret verifies, and so does the old one for a while.
    rotated = shown_once(client.post(path, {"relay": "smtp"}).text, "issued-secret-value")
    assert rotated != secret
    assert post_generic(server, project.id, rotated, {**event, "id": "evt-2"}) == 200
    assert post_generic(server, project.id, secret, {**event, "id": "evt-3"}) == 200
    assert "verifies until" in client.get(path).text

    # Removed: every post is refused from now on.
    assert client.post(f"{path}/remove", {"relay": "smtp"}).status_code == 303
    assert post_generic(server, project.id, rotated, {**event, "id": "evt-4"}) == 401
    assert client.post(f"{path}/remove", {"relay": "smtp"}).status_code == 404


def test_a_secret_the_relay_makes_is_typed_in_and_never_shown_back(
    server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    path = f"/projects/{project.id}/settings/webhooks"
    missing = client.post(path, {"relay": "mailgun"})
    assert missing.status_code == 400
    assert 'data-code="validation_error"' in missing.text
    assert "secret is required for mailgun" in missing.text
    wrong_key = client.post(path, {"relay": "sendgrid", "public_key": "not a key"})
    assert wrong_key.status_code == 400
    assert "public_key" in wrong_key.text
    bad_arn = client.post(path, {"relay": "ses", "topic_arn": "arn:nope"})
    assert bad_arn.status_code == 400
    assert "topic_arn" in bad_arn.text
    unknown = client.post(path, {"relay": "pigeon"})
    assert unknown.status_code == 400
    assert "relay must be one of" in unknown.text
    not_taken = client.post(path, {"relay": "postmark", "secret": "mine"})
    assert not_taken.status_code == 400
    assert "postmark does not take secret" in not_taken.text

    signing_key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
    given = client.post(path, {"relay": "mailgun", "secret": signing_key})
    assert given.status_code == 201
    assert "Saved the Mailgun secret you gave" in given.text
    assert signing_key not in given.text
    assert 'id="issued-secret-value"' not in given.text
    listed = client.get(path).text
    assert signing_key not in listed
    assert re.search(r'id="relay-mailgun".*?data-configured="yes"', listed, re.S)
    api = server.client().get(f"/v1/projects/{project.id}/webhook-secrets").json()
    assert [s["relay"] for s in api["webhook_secrets"]] == ["mailgun"]


def test_an_outbound_endpoint_gets_a_signed_delivery_shown_in_its_log(
    server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    path = f"/projects/{project.id}/settings/outbound-webhooks"
    with Receiver() as receiver:
        url = f"{receiver.url}/hooks"
        no_events = client.post(path, {"url": url})
        assert no_events.status_code == 400
        assert 'data-field="events"' in no_events.text
        assert html.escape(url) in no_events.text  # the form keeps what was typed
        bad_url = client.post(path, {"url": "ftp://example.com/x", "event.message.bounced": "1"})
        assert bad_url.status_code == 400
        assert 'data-field="url"' in bad_url.text

        made = client.post(path, {"url": url, "event.message.bounced": "1"})
        assert made.status_code == 201, made.text[-2000:]
        secret = shown_once(made.text, "endpoint-secret")
        assert secret.startswith("whsec_")
        found = re.search(r'id="created-endpoint" data-webhook="(wh_\w+)"', made.text)
        assert found is not None
        webhook_id = found[1]
        listed = client.get(path).text
        assert secret not in listed
        assert f'<tr data-webhook="{webhook_id}">' in listed
        assert "message.bounced" in listed

        # A bounce reported through the inbound webhook fans out to the endpoint.
        inbound = client.post(f"/projects/{project.id}/settings/webhooks", {"relay": "smtp"})
        relay_secret = shown_once(inbound.text, "issued-secret-value")
        bounce = {"id": "bounce-1", "type": "bounced", "email": "gone@example.com",
                  "bounce_type": "hard", "reason": "550 5.1.1 User unknown",
                  "timestamp": int(time.time())}  # fmt: skip
        assert post_generic(server, project.id, relay_secret, bounce) == 200
        eventually(lambda: receiver.requests, "the delivery to reach the endpoint")
        [request] = receiver.requests
        verify_signature(secret, request)
        assert json.loads(request.body)["data"]["email"] == "gone@example.com"

        log_path = f"{path}/{webhook_id}"

        def succeeded() -> str:
            page = client.get(log_path).text
            return page if "delivery-succeeded" in page else ""

        log = eventually(succeeded, "the delivery log to show the success")
        row = re.search(r'<tr data-delivery="(whmsg_\w+)">(.*?)</tr>', log, re.S)
        assert row is not None
        assert row[1] == request.headers["webhook-id"]
        assert "message.bounced" in row[2]
        assert re.search(r'class="last-answer">200 <code>thanks</code>', row[2])
        assert (
            client.get(log_path, params={"status": "failed"}).text.count("<tr data-delivery") == 0
        )
        assert client.get(log_path, params={"status": "nope"}).status_code == 400

        assert client.post(f"{log_path}/delete").status_code == 303
        assert f'data-webhook="{webhook_id}"' not in client.get(path).text
        assert server.client().get(f"/v1/webhooks/{webhook_id}").status_code == 404
        assert client.get(log_path).status_code == 404


def test_subscription_groups_are_added_and_removed(
    server: GFServer, project: GFProject, client: DashboardClient
) -> None:
    path = f"/projects/{project.id}/settings/subscription-groups"
    assert client.get(path).status_code == 200
    for name, label in (("newsletter", "The newsletter"), ("product-updates", "Product news")):
        added = client.post(path, {"name": name, "label": label, "description": "Monthly"})
        assert added.status_code == 303, added.text[-1000:]
    page = client.get(path).text
    assert page.index('data-group="newsletter"') < page.index('data-group="product-updates"')
    for fields, says in (
        ({"name": "newsletter", "label": "Again"}, "listed twice"),
        ({"name": "Bad Name", "label": "x"}, "a-z 0-9 - _"),
        ({"name": "fine", "label": ""}, "label may not be empty"),
        ({"name": "fine", "label": "x" * 201}, "label is longer than 200"),
        ({"name": "fine", "label": "x", "description": "d" * 1001}, "description is longer"),
    ):
        refused = client.post(path, fields)
        assert refused.status_code == 400, fields
        assert says in refused.text, (fields, refused.text[-1500:])
    api = server.client().get(f"/v1/projects/{project.id}/subscription-groups").json()
    assert [g["name"] for g in api["subscription_groups"]] == ["newsletter", "product-updates"]

    assert client.post(f"{path}/remove", {"name": "newsletter"}).status_code == 303
    assert client.post(f"{path}/remove", {"name": "newsletter"}).status_code == 404
    api = server.client().get(f"/v1/projects/{project.id}/subscription-groups").json()
    assert api["subscription_groups"] == [
        {"name": "product-updates", "label": "Product news", "description": "Monthly"}
    ]


def test_the_domain_check_page_shows_each_verdict_and_the_record_to_publish(
    server: GFServer,
    project: GFProject,
    client: DashboardClient,
    dns_server: DNSTestServer,
    smtp_server: SMTPServerFactory,
) -> None:
    relay = smtp_server(auth=True)
    provider = server.create_smtp_provider(project.id, "127.0.0.1", relay.port)
    providers_page = client.get(f"/projects/{project.id}/settings/providers").text
    path = f"/projects/{project.id}/settings/providers/{provider['id']}/domain-check"
    assert f'href="{path}"' in providers_page

    dns_server.clear()
    opened = client.get(path)
    assert opened.status_code == 200
    assert "Domain check: example.com" in opened.text
    assert dns_server.queries == []  # opening the page does not wait on DNS
    assert 'id="check-spf"' not in opened.text

    dns_server.add("example.com", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.add("gf2026._domainkey.example.com", "TXT", f"v=DKIM1; k=rsa; p={DKIM_KEY}")
    dns_server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=block")
    try:
        checked = client.get(path, params={"check": "1", "dkim_selector": "gf2026"})
        assert checked.status_code == 200
        api = server.client().get(
            f"/v1/email-providers/{provider['id']}/domain-check",
            params={"dkim_selector": "gf2026"},
        )
        assert api.status_code == 200
        report = api.json()["domain_check"]
        for part in ("spf", "dkim", "dmarc"):
            section = re.search(rf'<section class="check" id="check-{part}"(.*?)</section>',
                                checked.text, re.S)  # fmt: skip
            assert section is not None, part
            expected, shown = report[part], html.unescape(section[1])
            assert f'data-status="{expected["status"]}"' in section[0]
            assert expected["detail"] in shown
            if expected["publish"] is None:
                assert "publish-value" not in shown
            else:
                record = expected["publish"]
                assert f'<code class="publish-value">{record["value"]}</code>' in shown
                assert f'<code class="publish-name">{record["name"]}</code>' in shown
        assert [report[p]["status"] for p in ("spf", "dkim", "dmarc")] == ["ok", "ok", "wrong"]
        assert ("gf2026._domainkey.example.com", "TXT") in dns_server.queries
    finally:
        dns_server.clear()

    nothing = client.get(path, params={"check": "1"})
    assert nothing.text.count('data-status="missing"') == 3
    assert "v=DMARC1; p=none" in nothing.text
    bad = client.get(path, params={"check": "1", "dkim_selector": "not a selector!"})
    assert bad.status_code == 400
    assert "dkim_selector must be" in bad.text
