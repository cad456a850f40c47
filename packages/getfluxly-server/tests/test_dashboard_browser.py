"""The dashboard in a real browser (Playwright driving the system's Chromium) against
``getfluxly dev`` as a newcomer runs it: the dev admin it prints signs in; a Custom SMTP
provider added against a local relay shows ``auth_failed`` under the password field with a
wrong password; a test email lands in the catcher page; a template is built and previewed;
a transactional message sent through the API appears in the message log. Screenshots of the
main pages (wide and phone-sized) are saved under the run's temporary directory, whose path
the run prints.

Dev mode runs on SQLite only; the database-dependent parts (users, sessions) are covered on
both databases by test_users.py and test_dashboard_security.py. Waits are for what the page
shows, with generous deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from flux_testkit import browser
from flux_testkit.devserver import DevServer, running_dev
from flux_testkit.smtpd import DEFAULT_USERS, SMTPTestServer


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """``getfluxly dev`` with a clean environment (HOME and PATH only), its exports parsed."""
    with running_dev(tmp_path_factory.mktemp("dashboard-dev")) as started:
        yield started


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (printed, so a person can look at them after the run)."""
    return browser.screenshots(tmp_path_factory, "dashboard")


@pytest.fixture
def context(chromium: Browser) -> Iterator[BrowserContext]:
    with browser.context(chromium) as made:
        yield made


@pytest.fixture
def page(context: BrowserContext, dev: DevServer) -> Page:
    """A page signed in as the dev admin, through the sign-in form (script errors kept)."""
    return browser.sign_in_dev_admin(context, dev)


def project_url(dev: DevServer, path: str = "") -> str:
    return f"{dev.url}/projects/{dev.exports['GETFLUXLY_PROJECT_ID']}{path}"


def test_a_wrong_password_is_refused_and_the_dev_admin_signs_in(
    context: BrowserContext, dev: DevServer, shots: Path
) -> None:
    tab = context.new_page()
    tab.goto(dev.url + "/")  # a page of the dashboard sends a stranger to the sign-in form
    expect(tab).to_have_url(re.compile(r"/login\?next="))
    tab.get_by_label("Email").fill(dev.exports["GETFLUXLY_ADMIN_EMAIL"])
    tab.get_by_label("Password").fill("not the password")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("#login-error")).to_have_text("Wrong email or password")
    tab.screenshot(path=shots / "sign-in-refused.png")
    # Keyboard only: the email is kept and focused first; Tab to the password, Enter sends.
    tab.get_by_label("Password").focus()
    tab.keyboard.type(dev.exports["GETFLUXLY_ADMIN_PASSWORD"])
    tab.keyboard.press("Enter")
    expect(tab).to_have_url(re.compile(r"/projects/prj_"))
    expect(tab.get_by_text(dev.exports["GETFLUXLY_ADMIN_EMAIL"])).to_be_visible()


def test_the_main_pages_render_wide_and_on_a_phone(
    page: Page, dev: DevServer, shots: Path, chromium: Browser
) -> None:
    pages = {
        "overview": project_url(dev),
        "profiles": project_url(dev, "/profiles"),
        "templates": project_url(dev, "/templates"),
        "messages": project_url(dev, "/messages"),
        "suppressions": project_url(dev, "/suppressions"),
        "providers": project_url(dev, "/settings/providers"),
        "add-smtp-provider": project_url(dev, "/settings/providers/new?kind=smtp"),
        "api-keys": dev.url + "/settings/keys",
        "projects": dev.url + "/settings/projects",
        "users": dev.url + "/settings/users",
        "dev-inbox": dev.url + "/dev/inbox",
    }
    for name, address in pages.items():
        page.goto(address)
        expect(page.locator("h1")).to_be_visible()
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    # The overview's chart: one line per series, and the same numbers as a table.
    page.goto(project_url(dev))
    expect(page.locator("svg polyline")).to_have_count(6)
    expect(page.locator("#activity-table tbody tr")).to_have_count(30)
    assert browser.script_errors(page) == []

    # A phone: one column, nothing wider than the screen.
    phone = chromium.new_context(
        viewport={"width": 375, "height": 740}, storage_state=page.context.storage_state()
    )
    try:
        small = phone.new_page()
        for name in ("overview", "messages", "add-smtp-provider"):
            small.goto(pages[name])
            expect(small.locator("h1")).to_be_visible()
            width = small.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (name, width)
            small.screenshot(path=shots / f"phone-{name}.png", full_page=True)
    finally:
        phone.close()


def test_the_pages_are_usable_with_the_keyboard(page: Page, dev: DevServer) -> None:
    page.goto(project_url(dev))
    page.keyboard.press("Tab")
    skip = page.locator(":focus")
    expect(skip).to_have_text("Skip to content")
    # Tab on to the navigation and follow a link with Enter.
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Templates":
            break
    else:
        raise AssertionError("the Templates link is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/templates$"))


def test_a_wrong_smtp_password_shows_auth_failed_under_the_password_field(
    page: Page, dev: DevServer, shots: Path
) -> None:
    [(user, password)] = DEFAULT_USERS.items()
    relay = SMTPTestServer(auth=True)
    relay.start()
    try:
        page.goto(project_url(dev, "/settings/providers"))
        page.get_by_role("link", name="Custom SMTP").click()
        expect(page.locator("h1")).to_have_text("Add provider: Custom SMTP")
        fields = {
            "Display name": "Office relay", "From email": "hello@example.com",
            "From name": "Acme", "Reply-To": "support@example.com", "SMTP host": "127.0.0.1",
            "SMTP port": str(relay.port), "Username": user, "Password": "wrong-password",
        }  # fmt: skip
        for label, value in fields.items():
            page.get_by_label(label, exact=False).first.fill(value)
        page.get_by_label("Encryption").select_option("none")
        page.get_by_role("button", name="Verify and save").click()

        error = page.locator("#field-password .field-error")
        expect(error).to_contain_text("auth_failed")
        expect(error).to_contain_text("app password")
        expect(page.locator("#p-password")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#p-password")).to_have_value("")  # a secret is never sent back
        expect(page.locator("#p-smtp_host")).to_have_value("127.0.0.1")
        expect(page.locator("#p-display_name")).to_have_value("Office relay")
        expect(page.locator(".field-error")).to_have_count(1)
        page.screenshot(path=shots / "provider-auth-failed.png", full_page=True)

        page.locator("#p-password").fill(password)
        page.get_by_role("button", name="Verify and save").click()
        expect(page.locator(".flash")).to_contain_text("Added Office relay: verified")
        expect(page.locator("#providers")).to_contain_text("Office relay")
        assert "wrong-password" not in page.content()
        assert password not in page.content()
    finally:
        relay.stop()


def test_a_test_email_lands_in_the_catcher_page(page: Page, dev: DevServer, shots: Path) -> None:
    page.goto(project_url(dev, "/settings/providers"))
    row = page.locator("#providers tr", has_text="Dev catcher")
    row.get_by_label("Send a test to").fill("newcomer@example.com")
    row.get_by_role("button", name="Send test").click()
    expect(page.locator("#test-outcome")).to_contain_text(
        "Test email to newcomer@example.com accepted"
    )

    page.goto(dev.url + "/dev/inbox")
    caught = page.locator("#inbox tbody tr", has_text="newcomer@example.com").first
    expect(caught).to_be_visible()
    caught.get_by_role("link").first.click()
    message = page.locator("#caught-message")
    expect(message).to_contain_text("newcomer@example.com")
    expect(page.locator("#caught-text")).to_contain_text("the provider is connected")
    page.screenshot(path=shots / "dev-inbox-test-email.png", full_page=True)


def test_a_template_is_built_with_a_live_preview(page: Page, dev: DevServer, shots: Path) -> None:
    page.goto(project_url(dev, "/templates"))
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Name").fill("welcome-browser")
    page.get_by_label("Subject (Liquid)").fill("Welcome, {{ profile.first_name }}")
    page.get_by_label("HTML (Liquid)").fill(
        "<h1>Hello {{ profile.first_name }}</h1><p>Your code: {{ data.code }}</p>"
    )
    expect(page.locator("#preview-subject")).to_have_text("Welcome, Ada")
    preview = page.frame_locator("#preview-html")
    expect(preview.locator("h1")).to_have_text("Hello Ada")
    expect(page.locator("#preview-problems")).to_contain_text("data.code is not defined")

    page.get_by_label("data (JSON)").fill('{"code": "492 118"}')
    expect(preview.locator("p")).to_have_text("Your code: 492 118")
    expect(page.locator("#preview-problems")).to_be_hidden()
    expect(page.locator("#preview-text")).to_contain_text("Your code: 492 118")

    page.get_by_label("HTML (Liquid)").fill("<h1>Hello {{ profile.first_name </h1>")
    expect(page.locator("#preview-problems")).to_contain_text("html")
    page.get_by_label("HTML (Liquid)").fill("<h1>Hello {{ profile.first_name }}</h1>")
    expect(preview.locator("h1")).to_have_text("Hello Ada")
    page.screenshot(path=shots / "template-editor.png", full_page=True)

    page.get_by_role("button", name="Save").click()
    expect(page.locator(".flash")).to_have_text("Saved")
    expect(page.locator("h1")).to_contain_text("welcome-browser")
    page.goto(project_url(dev, "/templates"))
    expect(page.locator("#templates")).to_contain_text("welcome-browser")


def test_a_message_sent_through_the_api_appears_in_the_log(
    page: Page, dev: DevServer, shots: Path
) -> None:
    api = httpx.Client(
        base_url=dev.url,
        headers={"Authorization": f"Bearer {dev.exports['GETFLUXLY_SERVER_KEY']}"},
        timeout=30,
    )
    with api:
        sent = api.post(
            "/v1/messages",
            json={"to": "reader@example.com", "subject": "Your receipt {{ data.n }}",
                  "html": "<p>Thanks!</p>", "data": {"n": 7}},
        )  # fmt: skip
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message"]["id"]

    page.goto(project_url(dev, "/messages"))
    row = page.locator(f'tr[data-message="{message_id}"]')
    expect(row).to_contain_text("reader@example.com")
    page.get_by_label("To").fill("reader@example.com")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.messages tbody tr")).to_have_count(1)
    row.get_by_role("link").click()

    status = page.locator("#message-status")
    deadline = time.monotonic() + browser.WAIT_MS / 1000
    while status.inner_text() != "sent" and time.monotonic() < deadline:
        time.sleep(0.5)
        page.reload()
    expect(status).to_have_text("sent")
    expect(page.locator("#history")).to_contain_text("queued")
    page.screenshot(path=shots / "message.png", full_page=True)

    # The catcher page: the message rendered, its HTML in a sandboxed frame.
    page.goto(dev.url + "/dev/inbox")
    caught = page.locator("#inbox tbody tr", has_text=message_id)
    expect(caught).to_contain_text("Your receipt 7")
    caught.get_by_role("link", name="Your receipt 7").click()
    frame = page.locator("#caught-html")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("#caught-html").locator("p")).to_have_text("Thanks!")
    page.screenshot(path=shots / "dev-inbox-message.png", full_page=True)
