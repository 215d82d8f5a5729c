"""Browser fixtures: Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's async API.

Load with ``pytest_plugins = ["tests.plugins.browser"]`` in a test module. Never a browser
Playwright downloads itself (``make install`` installs the ``chromium`` package instead, see the
Makefile's ``browser`` step); without ``/usr/bin/chromium`` the tests that ask for ``browser``
skip with the reason.

Why the async API: the suite runs pytest-asyncio on one session loop. Playwright's sync API
leaves its own loop marked as running in the thread between calls, which would break every async
test after the first browser test; the async API simply runs on the session loop.

- ``browser``: one headless Chromium per session, launched with the flags this closed network
  needs (without ``--disable-background-networking`` and friends its connections are refused).
- ``page``: a fresh context (cookies, storage, JavaScript setting) and page per test.
- ``new_context``: for a test that needs its own context options (``java_script_enabled=False``).
- ``live_server``: ``base_url = live_server(app)`` serves a FastAPI app with a real uvicorn on a
  free port (in a thread), configured as ``clipembed serve`` does, until the test ends
  (``serve_http`` is the context manager under it).
- ``screenshot``: ``await screenshot(page, "name")`` saves ``docs/img/name.png`` for the docs.

Test modules reach the helpers through these fixtures, not by importing this module (an import
before ``pytest_plugins`` is read would escape pytest's assertion rewriting).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
import uvicorn

from clipembed.testing import servers

if TYPE_CHECKING:
    from fastapi import FastAPI
    from playwright.async_api import Browser, BrowserContext, Page

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path(os.environ.get("CLIPEMBED_TEST_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
DOCS_IMG = ROOT / "docs" / "img"

# Headless, no sandbox (root), and nothing that phones home: on this machine's closed network
# Chromium's background connections are refused and would otherwise stall or crash the launch.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return (
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(`make browser`, or `apt-get install -y chromium` as root)"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the session (skips with the reason when there is none)."""
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # The fresh --user-data-dir: launch() always gives Chromium a new temporary profile
        # directory of its own (and refuses the flag in ``args``), removed at close.
        instance = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=60_000,
        )
        try:
            yield instance
        finally:
            await instance.close()


NewContext = Callable[..., Awaitable["BrowserContext"]]


@pytest_asyncio.fixture(loop_scope="session")
async def new_context(browser: Browser) -> AsyncIterator[NewContext]:
    """``await new_context(**options)``: contexts of this test's own, closed afterwards."""
    contexts: list[BrowserContext] = []

    async def make(**options: Any) -> BrowserContext:
        context = await browser.new_context(**options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(new_context: NewContext) -> Page:
    """A page in a fresh context (nothing shared with another test)."""
    context = await new_context()
    return await context.new_page()


@contextlib.contextmanager
def serve_http(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port (in a thread); yield its base URL.

    uvicorn is configured as ``clipembed serve`` configures it (no proxy headers of its own, the
    app's access log): what a test sees over the socket is what a deployment serves."""
    from clipembed.api import clients

    port = servers.free_port()
    server = uvicorn.Server(
        clients.server_config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_server() -> Iterator[Callable[[FastAPI], str]]:
    """``live_server(app)`` -> base URL; every server started is stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(serve_http(app))


def write_atomically(target: Path, data: bytes) -> None:
    """Written beside the target and renamed: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as tmp:
        tmp.write(data)
        partial = Path(tmp.name)
    try:
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


async def save_screenshot(page: Page, name: str, *, directory: Path | None = None) -> Path:
    """Save a full-page screenshot as ``docs/img/NAME.png`` (or under ``directory``)."""
    target = (directory or DOCS_IMG) / f"{name}.png"
    data = await page.screenshot(full_page=True)
    await asyncio.to_thread(write_atomically, target, data)
    return target


@pytest.fixture
def screenshot() -> Callable[..., Awaitable[Path]]:
    """``await screenshot(page, "name")`` -> the path of ``docs/img/name.png``."""
    return save_screenshot
