"""Headless Chromium for the dashboard's browser tests, through playwright's sync API.

The browser is the system's ``/usr/bin/chromium`` (Debian's ``chromium`` package), never one playwright
downloads: the tests run without internet. A missing browser fails the test, with the command that installs it,
rather than skipping it, so a CI image without it cannot pass silently.

Typical use, with the ``browser`` fixture of ``conftest.py`` (one Chromium per test module)::

    def test_page(browser, dashboard_url):
        with open_page(browser, dashboard_url) as page:
            wait_for_polls(page, 2)
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach its update and sync services, and on a
# closed network page loads stall behind them.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 800}
#: Playwright's wait for any one step (a selector, a condition), in milliseconds.
STEP_TIMEOUT_MS = 10_000


def require_chromium() -> Path:
    """The Chromium binary; fails the calling test if it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}; the dashboard's browser tests need it. "
            "Install it with `apt-get install -y chromium` (CI images install it).",
            pytrace=False,
        )
    return CHROMIUM


@contextlib.contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A headless Chromium, closed (with playwright's driver) on exit."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageProblems:
    """What went wrong in a page: uncaught exceptions and console errors (failed loads aside)."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # A 404 on a purposely unknown trace is logged by the browser as a failed load; that is the page working.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error.message}")


@contextlib.contextmanager
def open_page(browser: Browser, url: str, *, check_errors: bool = True) -> Iterator[Page]:
    """A fresh page (own context, 1280x800) at ``url``; on exit, fails if the page's scripts raised or logged errors.

    Args:
        browser: From :func:`launch_chromium`.
        url: The page to load.
        check_errors: Whether script errors fail the test on exit.
    """
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    problems = PageProblems()
    try:
        page = context.new_page()
        page.on("console", problems.on_console)
        page.on("pageerror", problems.on_page_error)
        page.goto(url)
        yield page
    finally:
        context.close()
    if check_errors:
        assert not problems.errors, "the page's scripts failed:\n" + "\n".join(problems.errors)


def polls(page: Page) -> int:
    """How many times the dashboard page has polled the cluster view so far."""
    return int(page.evaluate("() => Number(document.body.dataset.polls || 0)"))


def wait_for_polls(page: Page, count: int) -> None:
    """Waits until the dashboard page has polled ``count`` more times."""
    target = polls(page) + count
    page.wait_for_function("(n) => Number(document.body.dataset.polls || 0) >= n", arg=target)


def screenshot(page: Page, path: Path, *, full_page: bool = True) -> Path:
    """Saves a PNG of ``page`` to ``path`` (creating its folder) and prints where, for a human to look at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A sticky header is drawn where the viewport was scrolled to; from the top it sits where it belongs.
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path
