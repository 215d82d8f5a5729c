"""The browser fixtures themselves: Debian's Chromium renders a page served over real HTTP,
runs its JavaScript (a click that fetches from the server), and reads it with JavaScript off."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

pytest_plugins = ["tests.plugins.browser"]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>clipembed smoke</title></head>
<body>
  <h1 id="heading">Server-rendered heading</h1>
  <noscript><p id="nojs">JavaScript is off</p></noscript>
  <button id="go" type="button">Ask the server</button>
  <p id="result">nothing yet</p>
  <script>
    document.getElementById("go").addEventListener("click", async () => {
      const response = await fetch("/api/answer?q=clutch");
      const body = await response.json();
      document.getElementById("result").textContent = "answer: " + body.answer;
    });
  </script>
</body>
</html>
"""


def smoke_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return PAGE

    @app.get("/api/answer")
    async def answer(q: str) -> dict[str, str]:
        return {"answer": q.upper()}

    return app


@pytest.fixture
def base_url(live_server) -> str:
    return live_server(smoke_app())


async def test_renders_clicks_and_sees_the_result(page, base_url, screenshot, tmp_path):
    response = await page.goto(base_url + "/")
    assert response is not None and response.status == 200
    assert await page.title() == "clipembed smoke"
    assert await page.locator("#heading").text_content() == "Server-rendered heading"
    assert not await page.locator("#nojs").is_visible()

    async with page.expect_response(lambda r: "/api/answer" in r.url) as answered:
        await page.get_by_role("button", name="Ask the server").click()
    assert (await answered.value).status == 200
    await page.locator("#result", has_text="answer: CLUTCH").wait_for()

    shot = await screenshot(page, "smoke", directory=tmp_path)
    assert shot == tmp_path / "smoke.png"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["smoke.png"]


async def test_reads_the_page_with_javascript_disabled(new_context, base_url):
    context = await new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(base_url + "/")
    assert await page.locator("#heading").text_content() == "Server-rendered heading"
    assert await page.locator("#nojs").is_visible()
    assert await page.locator("#nojs").text_content() == "JavaScript is off"
    # The click does nothing: no script runs, no request leaves.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    await page.get_by_role("button", name="Ask the server").click()
    assert await page.locator("#result").text_content() == "nothing yet"
    assert not [url for url in requests if "/api/answer" in url]
