"""Headless Chromium for the browser tests, driven by Playwright.

The browser is the system's (``scripts/setup-browser`` installs Debian's ``chromium``),
launched through ``executable_path``: Playwright's own browser download (``playwright
install``) is never run, and nothing here triggers it. The flags are those known to work on
these machines: no sandbox as root, no GPU, and nothing that calls out to Google's hosts.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

if TYPE_CHECKING:
    from flux_testkit.devserver import DevServer

CHROMIUM = "/usr/bin/chromium"
#: How long a page action or expectation may wait for what the page shows (a busy machine).
WAIT_MS = 30_000
#: A desktop window.
WIDE: ViewportSize = {"width": 1280, "height": 900}
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--mute-audio",
)


@contextmanager
def chromium(extra_args: Sequence[str] = ()) -> Iterator[Browser]:
    """The system's Chromium, headless, closed at the end (a failing test ``pytest.fail``s
    with what to run when it is missing)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup-browser (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*FLAGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def context(browser: Browser, viewport: ViewportSize = WIDE) -> Iterator[BrowserContext]:
    """A fresh browser context (its own cookies) of ``viewport``, waiting up to
    :data:`WAIT_MS`, closed at the end."""
    made = browser.new_context(viewport=viewport)
    made.set_default_timeout(WAIT_MS)
    try:
        yield made
    finally:
        made.close()


#: Each page's uncaught script errors, for pages opened by :func:`new_page`.
_SCRIPT_ERRORS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def new_page(context: BrowserContext) -> Page:
    """A new page of ``context`` whose uncaught script errors :func:`script_errors` lists."""
    page = context.new_page()
    errors = _SCRIPT_ERRORS.setdefault(page, [])
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def script_errors(page: Page) -> list[str]:
    """The uncaught script errors of a page opened by :func:`new_page`, so far."""
    return _SCRIPT_ERRORS[page]


def sign_in_dev_admin(context: BrowserContext, dev: DevServer) -> Page:
    """A new page (see :func:`new_page`) signed in through the dashboard's sign-in form as
    the admin ``getfluxly dev`` printed."""
    page = new_page(context)
    page.goto(dev.url + "/login")
    page.get_by_label("Email").fill(dev.exports["GETFLUXLY_ADMIN_EMAIL"])
    page.get_by_label("Password").fill(dev.exports["GETFLUXLY_ADMIN_PASSWORD"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/projects/prj_"))
    return page


def screenshots(factory: pytest.TempPathFactory, name: str) -> Path:
    """A new directory for a test module's screenshots, printed so a person can look at them
    after the run (``pytest -s``)."""
    directory = factory.mktemp(f"{name}-screenshots")
    print(f"{name} screenshots: {directory}")
    return directory
