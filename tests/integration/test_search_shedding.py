"""Load shedding and the error map over real HTTP (issue 18): under more concurrent searches
than complete within the deadline, the excess is answered 503 "overloaded" at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from clipembed.api import shedding
from clipembed.api.app import create_app
from tests.plugins.browser import serve_http

HELD = 8  # searches admitted before anything has completed: 1 connection x STARTUP_FACTOR


@pytest.fixture
def slow_api(database_url, openai_settings, fake_openai):
    """The real app; every query embedding hangs (the fake's 'slow'), so admitted searches
    stay in flight for SEARCH_EMBED_TIMEOUT_MS."""
    fake_openai.control(plan=["slow"] * 1000)
    cfg = openai_settings(
        database_url=database_url,
        search_embed_timeout_ms=4000,
        clipembed_search_requests_per_second=0,  # per-client limits off: one test client
        clipembed_search_embeds_per_minute=0,
    )
    app = create_app(cfg)
    with serve_http(app) as base:  # uvicorn as `clipembed serve` runs it
        app.state.shedder = shedding.Shedder(connections=1, deadline_seconds=2.0)
        assert HELD == shedding.STARTUP_FACTOR
        yield base, app


async def test_the_excess_is_shed_at_once_with_retry_after(slow_api):
    base, app = slow_api
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one(i: int) -> httpx.Response:
            return await client.get("/search", params={"q": f"clutch {i}", "mode": "semantic"})

        answers = await asyncio.gather(*(one(i) for i in range(3 * HELD)))
    shed = [r for r in answers if "too many searches at once" in r.text]
    assert app.state.shedder.shed_total == len(shed) > 0
    for r in shed:
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
    # the admitted ones waited for the hanging provider and answered 503 too (semantic mode),
    # never more of them at once than the shedder allows, at their deadline (2 s from their
    # admission, cut at 0.85 of it), not when the query embedding gave up (4 s)
    others = [r for r in answers if r not in shed]
    odd = [(r.status_code, r.text[:200]) for r in others if r.status_code != 503]
    assert len(others) > 0 and odd == []
    assert all("did not finish within its deadline" in r.text for r in others), others[0].text
    assert app.state.shedder.in_flight == 0
