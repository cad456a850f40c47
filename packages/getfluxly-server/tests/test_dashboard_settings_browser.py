"""The settings pages of the feedback loop in a real browser (Playwright driving the system's
Chromium) against ``getfluxly dev``, and every dashboard page checked on a phone and with
the keyboard:

* a relay's webhook secret is made on the page (shown once, with the URL to paste), an
  outbound endpoint is added (its signing secret shown once), a bounce posted to the
  inbound webhook with that secret fans out to the endpoint (a local receiver, allowed
  through dev mode's multi-tenant guard by ``GETFLUXLY_PRIVATE_RELAY_ALLOWLIST``), and the
  delivery shows in the endpoint's log;
* every page of a seeded workspace (found by following the dashboard's own links from the
  navigation, so pages added later are found too) fits a 375 px wide screen: nothing is
  wider than the viewport;
* on every page, each form control has an accessible name (a label, aria-label or
  aria-labelledby) and Tab alone reaches the page's primary action.

Screenshots (wide and phone-sized) are saved under the run's temporary directory, whose path
the run prints. Dev mode runs on SQLite only; test_dashboard_settings.py covers the same pages
on both databases. Waits are for what the page shows; nothing asserts on timing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from flux_testkit import browser
from flux_testkit.devserver import DevServer, running_dev
from flux_testkit.outbound import Receiver, verify_signature
from flux_testkit.webhook_signers import standard_headers
from getfluxly_server.web.routing import PAGES

PHONE = {"width": 375, "height": 740}
#: An object id in a path (``prj_...``, ``msg_...``, ``wh_...``): pages are told apart by
#: their route, not by which object they show.
ID_SEGMENT = re.compile(r"^[a-z]+_[0-9A-Za-z]{6,}$")
#: Ids the seeded workspace has an object for; a page needing another (one added later) is
#: still checked when a link leads to it.
SEEDED_IDS = {"project_id", "provider_id", "template_id", "profile_id", "message_id", "key_id",
              "webhook_id"}  # fmt: skip

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The customer's endpoint, on loopback."""
    with Receiver() as started:
        yield started


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """``getfluxly dev`` allowing outbound webhooks to loopback (dev mode runs under the
    multi-tenant guard), its exports parsed."""
    allow = {"GETFLUXLY_PRIVATE_RELAY_ALLOWLIST": "127.0.0.1/32"}
    with running_dev(tmp_path_factory.mktemp("dashboard-settings-dev"), allow) as started:
        yield started


@pytest.fixture(scope="module")
def seeded(dev: DevServer, receiver: Receiver) -> DevServer:
    """The dev workspace with one of everything the pages list: a template, a profile, a
    message, a suppression, a subscription group, an outbound endpoint, a relay's secret."""
    project = dev.project_id
    with dev.api() as api, dev.api("GETFLUXLY_SERVER_KEY") as server:
        made = [
            api.post(f"/v1/projects/{project}/templates",
                     json={"name": "seeded-welcome", "subject": "Hi", "html": "<p>hi</p>"}),
            api.post(f"/v1/projects/{project}/suppressions", json={"email": "gone@example.com"}),
            api.put(f"/v1/projects/{project}/subscription-groups",
                    json={"subscription_groups": [{"name": "newsletter", "label": "Newsletter"}]}),
            api.post(f"/v1/projects/{project}/webhooks",
                     json={"url": f"{receiver.url}/seeded", "events": ["message.delivered"]}),
            api.post(f"/v1/projects/{project}/webhook-secrets", json={"relay": "postmark"}),
            server.post("/v1/events", json={"type": "identify", "external_id": "seeded-1",
                                            "traits": {"email": "seeded@example.com"}}),
            server.post("/v1/messages", json={"to": "seeded@example.com", "subject": "Seeded",
                                              "text": "hello"}),
        ]  # fmt: skip
        for answer in made:
            assert answer.status_code in (200, 201, 202), answer.text
        deadline = time.monotonic() + browser.WAIT_MS / 1000
        while not api.get(f"/v1/projects/{project}/profiles").json()["profiles"]:
            assert time.monotonic() < deadline, "the seeded profile never appeared"
            time.sleep(0.2)
    return dev


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (printed, so a person can look at them after the run)."""
    return browser.screenshots(tmp_path_factory, "dashboard settings")


@pytest.fixture
def page(chromium: Browser, dev: DevServer) -> Iterator[Page]:
    """A wide page signed in as the dev admin, through the sign-in form."""
    with browser.context(chromium) as context:
        yield browser.sign_in_dev_admin(context, dev)


@pytest.fixture
def phone(chromium: Browser, dev: DevServer) -> Iterator[Page]:
    """A phone-sized page signed in as the dev admin."""
    # Not ``is_mobile``: a mobile viewport zooms out to fit what overflows (innerWidth grows
    # with the page), which would hide the very overflow the test looks for.
    with browser.context(chromium, PHONE) as context:
        yield browser.sign_in_dev_admin(context, dev)


def post_bounce(dev: DevServer, secret: str, email: str) -> None:
    """A relay reporting a hard bounce to ``/webhooks/smtp/{project}``, signed with the
    project's generic-schema secret (Standard Webhooks)."""
    event = {"id": f"bounce-{email}", "type": "bounced", "email": email, "bounce_type": "hard",
             "reason": "550 5.1.1 User unknown", "timestamp": int(time.time())}  # fmt: skip
    body = json.dumps({"events": [event]}).encode()
    headers = standard_headers(secret, f"dlv-{email}", int(time.time()), body)
    answer = httpx.post(
        f"{dev.url}/webhooks/smtp/{dev.project_id}",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def test_a_webhook_secret_and_an_outbound_endpoint_with_its_delivery_log(
    page: Page, dev: DevServer, receiver: Receiver, shots: Path
) -> None:
    # Inbound: the URL to paste, and a secret made here (shown once).
    page.goto(dev.project_url())
    page.get_by_role("navigation", name="Sections").get_by_role(
        "link", name="Webhooks", exact=True
    ).click()
    expect(page.locator("h1")).to_have_text("Webhooks (inbound)")
    relay = page.locator("#relay-smtp")
    expect(relay.locator(".webhook-url")).to_have_text(f"{dev.url}/webhooks/smtp/{dev.project_id}")
    expect(relay.locator(".secret-state")).to_have_attribute("data-configured", "no")
    relay.get_by_role("button", name="Make secret").click()
    issued = page.locator("#issued-secret")
    expect(issued).to_contain_text("shown this once")
    expect(issued).to_contain_text(f"/webhooks/smtp/{dev.project_id}")
    secret = page.locator("#issued-secret-value").inner_text()
    assert secret.startswith("whsec_")
    page.screenshot(path=shots / "webhooks-secret-shown-once.png", full_page=True)
    # Mailgun's signing key comes from Mailgun: typed in, refused when missing.
    mailgun = page.locator("#relay-mailgun")
    mailgun.get_by_label("Signing secret").fill("key-from-mailgun-dashboard")
    mailgun.get_by_role("button", name="Make secret").click()
    expect(page.locator("#issued-secret")).to_contain_text("Saved the Mailgun secret you gave")
    assert "key-from-mailgun-dashboard" not in page.content()
    page.goto(dev.project_url("/settings/webhooks"))
    assert secret not in page.content()
    expect(page.locator("#relay-smtp .secret-state")).to_have_attribute("data-configured", "yes")

    # Outbound: an endpoint for bounces, its signing secret shown once.
    page.goto(dev.project_url("/settings/outbound-webhooks"))
    page.get_by_label("Endpoint URL").fill(f"{receiver.url}/bounces")
    page.get_by_label("message.bounced").check()
    page.get_by_role("button", name="Add endpoint").click()
    created = page.locator("#created-endpoint")
    expect(created).to_contain_text("shown this once")
    signing = page.locator("#endpoint-secret").inner_text()
    assert signing.startswith("whsec_")
    page.screenshot(path=shots / "outbound-endpoint-created.png", full_page=True)

    # An event that fans out: a bounce reported through the inbound webhook.
    before = len(receiver.requests)
    post_bounce(dev, secret, "bounced-reader@example.com")
    deadline = time.monotonic() + browser.WAIT_MS / 1000
    while not [r for r in receiver.requests[before:] if r.path == "/bounces"]:
        assert time.monotonic() < deadline, "the endpoint never got the delivery"
        time.sleep(0.2)
    [request] = [r for r in receiver.requests[before:] if r.path == "/bounces"]
    verify_signature(signing, request)

    page.goto(dev.project_url("/settings/outbound-webhooks"))
    page.locator("#endpoints").get_by_role("link", name=f"{receiver.url}/bounces").click()
    expect(page.locator("h1")).to_contain_text("Deliveries to")
    row = page.locator(f'tr[data-delivery="{request.headers["webhook-id"]}"]')
    deadline = time.monotonic() + browser.WAIT_MS / 1000
    while row.count() == 0 or "succeeded" not in row.inner_text():
        assert time.monotonic() < deadline, "the delivery log never showed the success"
        time.sleep(0.5)
        page.reload()
    expect(row).to_contain_text("message.bounced")
    expect(row.locator(".last-answer")).to_contain_text("200")
    page.screenshot(path=shots / "outbound-delivery-log.png", full_page=True)
    assert browser.script_errors(page) == []


def _route_of(path: str) -> str:
    return "/".join("{id}" if ID_SEGMENT.match(part) else part for part in path.split("/"))


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")


@pytest.fixture(scope="module")
def every_page(seeded: DevServer, chromium: Browser) -> list[str]:
    """Every dashboard page of the seeded workspace: the navigation's links, then the links
    each page shows (one page per route and query's names), breadth first."""
    with browser.context(chromium) as context:
        tab = browser.sign_in_dev_admin(context, seeded)
        queue, seen, found = [seeded.project_url()], set(), []
        while queue and len(found) < 100:
            address = queue.pop(0)
            parts = urlsplit(address)
            key = (_route_of(parts.path), tuple(sorted(re.findall(r"(\w+)=", parts.query))))
            if key in seen:
                continue
            seen.add(key)
            answer = tab.goto(address)
            assert answer is not None, address
            assert answer.status < 400, (address, answer.status)
            found.append(address)
            links = tab.eval_on_selector_all(
                "nav.side a[href], main a[href]:not([rel=next])", "els => els.map(e => e.href)"
            )
            for link in links:
                target = urlsplit(link)
                if target.netloc == parts.netloc and not target.path.startswith(
                    ("/v1/", "/static/", "/webhooks/", "/login", "/healthz")
                ):
                    queue.append(link.split("#")[0])
    # Every page the seeded workspace has an object for was reached.
    for info in PAGES:
        names = set(re.findall(r"\{(\w+)\}", info.path))
        if info.method != "GET" or info.path == "/" or not names <= SEEDED_IDS:
            continue
        pattern = _pattern(info.path)
        assert any(pattern.match(urlsplit(a).path) for a in found), info.path
    print(f"dashboard pages checked ({len(found)}):", *found, sep="\n  ")
    return found


#: The innermost elements reaching past the screen's right edge (for the failure message).
OVERFLOWING = """() => Array.from(document.querySelectorAll("main *")).filter(el =>
    el.getBoundingClientRect().right > window.innerWidth + 0.5
    && !Array.from(el.children).some(c => c.getBoundingClientRect().right > window.innerWidth + 0.5)
  ).slice(0, 5).map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (el.className ? "." + String(el.className).split(" ").join(".") : "")
    + " " + el.textContent.trim().slice(0, 40))"""


def test_every_page_fits_a_phone(every_page: list[str], phone: Page, shots: Path) -> None:
    wide: list[tuple[str, int, list[str]]] = []
    for address in every_page:
        phone.goto(address)
        expect(phone.locator("h1")).to_be_visible()
        width, viewport = phone.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth]"
        )
        if width > viewport or viewport != PHONE["width"]:
            wide.append((address, width, phone.evaluate(OVERFLOWING)))
        if "/settings/" in address:
            name = _route_of(urlsplit(address).path).strip("/").replace("/", "-")
            name = name.replace("{id}", "x").replace("projects-x-", "")
            phone.screenshot(path=shots / f"phone-{name}.png", full_page=True)
    assert wide == [], f"wider than {PHONE['width']} px: {wide}"
    # The measure sees overflow when there is some (a box wider than the screen).
    phone.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend', "
        "'<div style=\"width: 600px; height: 4px\"></div>')"
    )
    assert phone.evaluate("document.scrollingElement.scrollWidth > window.innerWidth")
    assert browser.script_errors(phone) == []


#: Each control of the page without an accessible name (labels, aria-label, aria-labelledby,
#: title; buttons by their text), as "tag name=...".
UNLABELLED = """() => Array.from(document.querySelectorAll(
    "input:not([type=hidden]), select, textarea, button")).filter(el => {
  const named = (el.labels && Array.from(el.labels).some(l => l.textContent.trim()))
    || (el.getAttribute("aria-label") || "").trim()
    || (el.getAttribute("aria-labelledby") || "").split(/\\s+/).some(
         id => id && document.getElementById(id) && document.getElementById(id).textContent.trim())
    || (el.getAttribute("title") || "").trim()
    || (el.tagName === "BUTTON" && el.textContent.trim());
  return !named;
}).map(el => el.tagName.toLowerCase() + " name=" + el.getAttribute("name"))"""
#: The page's primary action, marked: the first submit button of the main content that is
#: not a secondary or dangerous one, else the main content's first link.
MARK_PRIMARY = """() => {
  const button = Array.from(document.querySelectorAll("main button, main input[type=submit]"))
    .find(b => !b.matches(".secondary, .danger, .link") && b.offsetParent !== null);
  const target = button || document.querySelector("main a[href]");
  if (!target) return "";
  target.setAttribute("data-primary-probe", "");
  return target.textContent.trim() || target.value || target.getAttribute("href");
}"""


def test_every_form_control_is_labelled_and_tab_reaches_the_primary_action(
    every_page: list[str], page: Page
) -> None:
    unlabelled: dict[str, list[str]] = {}
    unreachable: list[tuple[str, str]] = []
    for address in every_page:
        page.goto(address)
        expect(page.locator("h1")).to_be_visible()
        missing = page.evaluate(UNLABELLED)
        if missing:
            unlabelled[address] = missing
        primary = page.evaluate(MARK_PRIMARY)
        if not primary:
            continue
        reached = False
        for _ in range(250):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.hasAttribute('data-primary-probe')"):
                reached = True
                break
        if not reached:
            unreachable.append((address, primary))
    assert unlabelled == {}, unlabelled
    # The probe finds a control nobody named.
    page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', "
                  "'<input name=\"probe\"><select name=\"probe2\"></select>')")  # fmt: skip
    assert page.evaluate(UNLABELLED) == ["input name=probe", "select name=probe2"]
    assert unreachable == [], unreachable
