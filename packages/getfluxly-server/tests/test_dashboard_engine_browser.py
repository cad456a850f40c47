"""The engine's pages in a real browser (Playwright driving the system's Chromium) against
``getfluxly dev`` as a newcomer runs it: sign in; build a template; create an automation
(a fault first, shown beside the steps box), activate it, trigger it through the API
(``POST /v1/events`` with the server key) and watch its message appear in the message log
and the automation's per-step count go up; build a segment with the rule builder and see
the live count; send a broadcast to it and watch its progress. Screenshots of the new pages
(wide and phone-sized) are saved under the run's temporary directory, whose path the run
prints.

Dev mode runs on SQLite only; the same pages run on both databases in
test_dashboard_engine_pages.py and test_dashboard_security.py. Waits are for what the page
shows, with generous deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from flux_testkit import browser
from flux_testkit.devserver import DevServer, running_dev

#: How long the engine may take to run a step and the worker to send (a busy machine).
ENGINE_WAIT = 90.0

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """``getfluxly dev`` with a clean environment (HOME and PATH only), its exports parsed."""
    with running_dev(tmp_path_factory.mktemp("engine-dev")) as started:
        yield started


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (printed, so a person can look at them after the run)."""
    return browser.screenshots(tmp_path_factory, "engine page")


@pytest.fixture
def context(chromium: Browser) -> Iterator[BrowserContext]:
    with browser.context(chromium) as made:
        yield made


@pytest.fixture
def page(context: BrowserContext, dev: DevServer) -> Page:
    """A page signed in as the dev admin, through the sign-in form (script errors kept)."""
    return browser.sign_in_dev_admin(context, dev)


def reload_until(page: Page, shown: Callable[[], bool], what: str) -> None:
    """Reload ``page`` until ``shown()`` (what the server computes in the background)."""
    deadline = time.monotonic() + ENGINE_WAIT
    while not shown():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
        page.reload()


def count_of(locator: Locator) -> int:
    return int(locator.inner_text()) if locator.count() else -1


def make_template(page: Page, dev: DevServer, name: str) -> str:
    page.goto(dev.project_url("/templates/new"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Subject (Liquid)").fill("Welcome aboard, {{ profile.first_name }}")
    page.get_by_label("HTML (Liquid)").fill("<p>Hello {{ profile.first_name }}</p>")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_have_text("Saved")
    found = re.search(r"/templates/(tpl_\w+)", page.url)
    assert found is not None, page.url
    return found[1]


def test_an_automation_is_created_activated_triggered_and_counted(
    page: Page, dev: DevServer, shots: Path
) -> None:
    template_id = make_template(page, dev, "journey-welcome")
    page.goto(dev.project_url())
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Automations").click()
    expect(page.locator("h1")).to_have_text("Automations")
    page.get_by_role("link", name="New automation").click()
    expect(page.locator("#template-ids")).to_contain_text(template_id)
    page.get_by_label("Name").fill("Browser journey")
    page.get_by_label("Trigger (JSON)").fill('{"event": "journey_started"}')
    steps = [
        {"id": "welcome", "type": "send_email", "template_id": template_id},
        {"id": "await-order", "type": "wait_for_event", "event": "journey_ordered",
         "timeout": "P3D", "on_event": [{"id": "thanks", "type": "send_email",
                                         "template_id": template_id}],
         "on_timeout": [{"id": "give-up", "type": "exit"}]},
    ]  # fmt: skip
    # A fault first: shown beside the steps box with its JSON path, the draft kept.
    page.get_by_label("Steps (JSON)").fill(
        json.dumps([*steps, {"id": "later", "type": "delay", "duration": "soon"}])
    )
    page.get_by_role("button", name="Save").click()
    error = page.locator("#field-steps .field-error")
    expect(error).to_contain_text("steps[2].duration")
    expect(page.get_by_label("Steps (JSON)")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).to_have_value("Browser journey")
    page.screenshot(path=shots / "automation-editor-fault.png", full_page=True)

    page.get_by_label("Steps (JSON)").fill(json.dumps(steps))
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_have_text("Saved as a draft")
    page.screenshot(path=shots / "automation-draft.png", full_page=True)
    expect(page.locator("#automation-status")).to_have_text("draft")
    expect(page.locator("#trigger")).to_contain_text("journey_started")
    welcome = page.locator("#step-welcome")
    expect(welcome).to_contain_text("Send the template journey-welcome")
    expect(welcome.locator('[data-count="sent"] b')).to_have_text("0")
    page.get_by_role("button", name="Activate").click()
    expect(page.locator("#automation-status")).to_have_text("active")
    automation_url = page.url.split("?")[0]

    with dev.api("GETFLUXLY_SERVER_KEY") as api:
        for body in (
            {"type": "identify", "external_id": "journey-1",
             "traits": {"email": "journey@example.com", "first_name": "Jo"}},
            {"event": "journey_started", "external_id": "journey-1"},
        ):  # fmt: skip
            answer = api.post("/v1/events", json=body)
            assert answer.status_code == 202, answer.text

    # The message appears in the log...
    page.goto(dev.project_url("/messages"))
    reload_until(
        page,
        lambda: page.locator("table.messages tbody tr", has_text="journey@example.com").count() > 0,
        "the automation's message in the log",
    )
    page.get_by_label("To").fill("journey@example.com")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.messages tbody tr")).to_have_count(1)
    page.screenshot(path=shots / "messages-automation.png", full_page=True)

    # ...and the automation's step counts go up (its mail in its chart once sent).
    page.goto(automation_url)
    sent = page.locator('#step-welcome [data-count="sent"] b')
    reload_until(page, lambda: count_of(sent) == 1, "the welcome step's sent count")
    expect(page.locator('#step-welcome [data-count="entered"] b')).to_have_text("1")
    # The run waits at the wait_for_event step, whose two ways are drawn side by side.
    waiting = page.locator("#step-await-order")
    reload_until(
        page, lambda: count_of(waiting.locator('[data-count="entered"] b').first) == 1,
        "the run to reach the wait",
    )  # fmt: skip
    expect(waiting.locator(".branch")).to_have_count(2)
    expect(waiting.locator(".branch").nth(0)).to_contain_text("journey_ordered")
    expect(waiting.locator("#step-thanks")).to_be_visible()
    reload_until(
        page,
        lambda: page.locator('.card[data-series="sent"] b').inner_text() == "1",
        "the send in the automation's chart",
    )
    expect(page.locator("svg polyline")).to_have_count(6)
    expect(page.locator("#versions")).to_contain_text("Version 1 (current)")
    page.screenshot(path=shots / "automation.png", full_page=True)

    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#automation-status")).to_have_text("paused")
    assert browser.script_errors(page) == []


def test_a_segment_is_built_with_a_live_count_and_sent_a_broadcast(
    page: Page, dev: DevServer, shots: Path
) -> None:
    with dev.api("GETFLUXLY_SERVER_KEY") as api:
        for n in range(2):
            answer = api.post(
                "/v1/events",
                json={"type": "identify", "external_id": f"gold-{n}",
                      "traits": {"email": f"gold{n}@example.com", "plan": "gold"}},
            )  # fmt: skip
            assert answer.status_code == 202, answer.text
    template_make = make_template(page, dev, "gold-news")
    page.goto(dev.project_url("/segments"))
    page.get_by_role("link", name="New segment").click()
    page.get_by_label("Name", exact=True).fill("Gold plan")
    first = page.locator("#cond-g0c0")
    first.get_by_label("Condition 1").select_option("trait")
    first.get_by_label("Trait, event or group name").fill("plan")
    first.get_by_label("Operator").select_option("eq")
    first.get_by_label("Value").fill("gold")
    # The live count of the unsaved rule (the profiles may still be on their way in).
    count = page.locator("#segment-count")
    deadline = time.monotonic() + ENGINE_WAIT
    while count.inner_text() != "2" and time.monotonic() < deadline:
        first.get_by_label("Value").press("End")
        first.get_by_label("Value").type(" ")
        first.get_by_label("Value").press("Backspace")
        time.sleep(1)
    expect(count).to_have_text("2")
    expect(page.get_by_label("Rule as JSON (engine spec section 3)")).to_have_value(
        re.compile(r'"value": "gold"')
    )
    page.screenshot(path=shots / "segment-builder.png", full_page=True)
    # A fault in the builder: shown beside its row, by the path.
    first.get_by_label("Operator").select_option("gt")
    first.get_by_label("Value").fill("true")
    expect(page.locator("#segment-count-error")).to_contain_text("rule.value")
    first.get_by_label("Operator").select_option("eq")
    first.get_by_label("Value").fill("gold")
    expect(count).to_have_text("2")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_contain_text("Saved")
    members = page.locator("#member-count")
    reload_until(page, lambda: members.inner_text() == "2", "the segment's members")
    expect(page.locator("#transitions tbody tr")).to_have_count(2)
    page.screenshot(path=shots / "segment.png", full_page=True)

    page.goto(dev.project_url("/broadcasts"))
    page.get_by_role("link", name="New broadcast").click()
    page.get_by_label("Name").fill("Gold news")
    page.get_by_label("Template").select_option(template_make)
    page.get_by_label("Segment (its members when the broadcast starts)").select_option(
        label="Gold plan (2 members now)"
    )
    page.screenshot(path=shots / "broadcast-new.png", full_page=True)
    page.get_by_role("button", name="Save and start").click()
    status = page.locator("#broadcast-status")
    reload_until(page, lambda: status.inner_text() == "sent", "the broadcast to be sent")
    expect(page.locator('.card[data-count="sent"] b')).to_have_text("2")
    expect(page.locator("#progress")).to_have_attribute("value", "2")
    page.screenshot(path=shots / "broadcast.png", full_page=True)
    page.goto(dev.project_url("/broadcasts"))
    expect(page.locator("#broadcasts")).to_contain_text("Gold news")
    assert browser.script_errors(page) == []


def test_the_engine_pages_fit_a_phone_and_the_keyboard(
    page: Page, dev: DevServer, shots: Path, chromium: Browser
) -> None:
    addresses = {
        name: dev.project_url(path)
        for name, path in (
            ("segments", "/segments"), ("segment-new", "/segments/new"),
            ("automations", "/automations"), ("automation-new", "/automations/new"),
            ("broadcasts", "/broadcasts"), ("broadcast-new", "/broadcasts/new"),
        )
    }  # fmt: skip
    for name, address in addresses.items():
        page.goto(address)
        expect(page.locator("h1")).to_be_visible()
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    phone = chromium.new_context(
        viewport={"width": 375, "height": 740}, storage_state=page.context.storage_state()
    )
    try:
        small = phone.new_page()
        for name, address in addresses.items():
            small.goto(address)
            expect(small.locator("h1")).to_be_visible()
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (name, width)
            small.screenshot(path=shots / f"phone-{name}.png", full_page=True)
    finally:
        phone.close()

    # Keyboard only: Tab to the Segments link, Enter, then Tab into the builder's first row.
    page.goto(dev.project_url())
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Segments":
            break
    else:
        raise AssertionError("the Segments link is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/segments$"))
    page.goto(dev.project_url("/segments/new"))
    page.get_by_label("Name", exact=True).focus()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "g0c0_kind":
            break
    else:
        raise AssertionError("the builder's first condition is not reachable with Tab")
