"""Headless Chromium for the browser tests, driven by Playwright.

The browser is the system's (``scripts/setup-browser`` installs Debian's ``chromium``),
launched through ``executable_path``: Playwright's own browser download (``playwright
install``) is never run, and nothing here triggers it. The flags are those known to work on
these machines: no sandbox as root, no GPU, and nothing that calls out to Google's hosts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ViewportSize, sync_playwright

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


def screenshots(factory: pytest.TempPathFactory, name: str) -> Path:
    """A new directory for a test module's screenshots, printed so a person can look at them
    after the run (``pytest -s``)."""
    directory = factory.mktemp(f"{name}-screenshots")
    print(f"{name} screenshots: {directory}")
    return directory
