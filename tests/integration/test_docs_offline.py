"""/docs (Swagger UI) and /redoc work without the internet: the real app over real HTTP
references only its own origin, serves every asset itself, and a browser whose requests to any
other host are aborted still renders the operation list."""

from __future__ import annotations

import os
import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from clipembed.api import docs
from clipembed.api.app import create_app

pytest_plugins = ["tests.plugins.browser"]

# Every URL a page may load: attributes, and the Swagger UI config's quoted `url: '...'`.
REFERENCE = re.compile(
    r"""(?:\b(?:src|href|spec-url)\s*=\s*["']([^"']+)["'])|(?:\burl\s*:\s*["']([^"']+)["'])"""
)
ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")

EXPECTED_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}
PAGES = (docs.DOCS_URL, docs.REDOC_URL)


@pytest.fixture
def base_url(live_server, openai_settings, database_url, fake_openai) -> str:
    """The real app (real database, fake provider) served by uvicorn."""
    return live_server(create_app(openai_settings(database_url=database_url)))


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("path", PAGES)
def test_page_references_only_its_own_origin_and_every_asset_answers(base_url, path):
    with httpx.Client(base_url=base_url, timeout=30) as client:
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == docs.CONTENT_SECURITY_POLICY
        html = page.text

        foreign = [url for url in ABSOLUTE.findall(html) if not url.startswith(base_url)]
        assert not foreign, f"{path} references other origins: {foreign}"

        refs = references(html)
        assert any(ref.endswith(".js") for ref in refs), refs
        assert "/openapi.json" in refs
        if path == docs.DOCS_URL:
            assert any(ref.endswith(".css") for ref in refs), refs
        for ref in refs:
            url = urljoin(base_url + path, ref)
            assert urlsplit(url).netloc == urlsplit(base_url).netloc, url
            answer = client.get(url)
            assert answer.status_code == 200, (ref, answer.status_code)
            suffix = os.path.splitext(urlsplit(url).path)[1]
            content_type = answer.headers["content-type"]
            assert content_type.startswith(EXPECTED_TYPES[suffix]), (ref, content_type)
            assert answer.content, ref


def test_swagger_oauth2_redirect_is_served(base_url):
    answer = httpx.get(base_url + "/docs/oauth2-redirect", timeout=30)
    assert answer.status_code == 200
    assert "oauth2" in answer.text.lower()


def test_docs_pages_are_not_in_the_schema(base_url):
    schema = httpx.get(base_url + "/openapi.json", timeout=30).json()
    assert not {"/docs", "/redoc", "/docs/oauth2-redirect"} & set(schema["paths"])


async def only_own_origin(context, base_url: str) -> list[str]:
    """Abort every request to another origin; returns the list of those it aborted."""
    origin = urlsplit(base_url)
    blocked: list[str] = []

    async def handle(route):
        target = urlsplit(route.request.url)
        if (target.scheme, target.netloc) == (origin.scheme, origin.netloc):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort("internetdisconnected")

    await context.route("**/*", handle)
    return blocked


def watch(page) -> tuple[list[str], list[str]]:
    """(uncaught page errors, console errors) as they happen."""
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    return errors, console


async def test_swagger_ui_renders_the_operations_offline(new_context, base_url, screenshot):
    context = await new_context(viewport={"width": 1280, "height": 900})
    blocked = await only_own_origin(context, base_url)
    page = await context.new_page()
    errors, console = watch(page)

    response = await page.goto(base_url + "/docs")
    assert response is not None and response.status == 200
    operations = page.locator(".opblock .opblock-summary-path")
    await operations.first.wait_for()
    paths = {(await text).strip() for text in [op.inner_text() for op in await operations.all()]}
    assert {"/search", "/healthz"} <= {p.replace("\u200b", "") for p in paths}, paths
    assert await page.locator(".swagger-ui .info .title", has_text="clipembed").count() == 1

    # One operation opens: the UI is alive, not a static dump.
    await page.locator(".opblock-summary", has_text="/healthz").first.click()
    await page.locator(".opblock.is-open").first.wait_for()

    assert not blocked, f"/docs tried other origins: {blocked}"
    assert not errors, errors
    assert not console, console
    if os.environ.get("CLIPEMBED_SCREENSHOTS"):
        await screenshot(page, "api-docs")


async def test_redoc_renders_the_operations_offline(new_context, base_url):
    context = await new_context(viewport={"width": 1280, "height": 900})
    blocked = await only_own_origin(context, base_url)
    page = await context.new_page()
    errors, console = watch(page)

    await page.goto(base_url + "/redoc")
    # ReDoc's menu lists every operation by its summary; the main column shows each path.
    await page.locator("h1", has_text="clipembed").first.wait_for()
    await page.get_by_text("/search", exact=False).first.wait_for()
    body = await page.locator("body").inner_text()
    assert "/healthz" in body
    assert not blocked, f"/redoc tried other origins: {blocked}"
    assert not errors, errors
    # The one thing the page's policy refuses: the footer's logo on redoc's CDN (decorative;
    # it hides itself). Anything else refused would be a part of the page missing.
    refused = [text for text in console if "cdn.redoc.ly/redoc/logo-mini.svg" not in text]
    assert not refused, refused
