"""Search servers report their database time, and bulk work follows it (issue 18).

The adaptive pace first saw only search statements in ``pg_stat_activity``; a search server
short of CPU holds its connections long without any statement looking old. These tests hold
search-pool connections the way such a server does and check the report, the pace's reading
of it, and that a server on a replica stays silent."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.api import search_report
from clipembed.api.app import create_app
from clipembed.bulk import adaptive_pace
from clipembed.db import connection
from tests.plugins.browser import serve_http


@given(
    requests=st.integers(min_value=0, max_value=10**6),
    wait=st.integers(min_value=0, max_value=10**9),
    usage=st.integers(min_value=0, max_value=10**9),
)
def test_database_ms_is_the_mean_wait_and_use_per_request(requests, wait, usage):
    ms, n = search_report.database_ms(
        {"requests_num": requests, "requests_wait_ms": wait, "usage_ms": usage}
    )
    assert n == requests
    assert ms == ((wait + usage) / max(1, requests) if wait + usage else 0.0)


def test_no_requests_is_zero_not_a_division():
    assert search_report.database_ms({}) == (0.0, 0)


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT server, database_ms, requests FROM clipembed_search_health"
        ).fetchall()


async def wait_for(condition, what: str, within: float = 30.0):
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await condition()):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)
    return result


async def test_a_server_holding_connections_long_is_seen_by_the_pace(database_url):
    search_pool = await connection.open_pool(database_url, max_size=2)
    write_pool = await connection.open_pool(database_url, max_size=1)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(
            search_report.report(search_pool, write_pool, stop, every=0.2, server="test:1")
        )

        async def held() -> None:  # a search that holds its connection 400 ms
            async with search_pool.connection() as conn:
                await conn.execute("SELECT 1")
                await asyncio.sleep(0.4)

        async def strained() -> bool:
            await asyncio.gather(held(), held())
            return await adaptive_pace.search_strain_ms(write_pool) >= 300

        await wait_for(strained, "the pace never saw the held connections")
        [(server, ms, requests)] = rows(database_url)
        assert server == "test:1" and requests >= 1 and ms > 0

        # an idle server keeps reporting, calm: the pace sees no strain
        async def calm() -> bool:
            return await adaptive_pace.search_strain_ms(write_pool) == 0

        await wait_for(calm, "an idle server still looked strained")
        stop.set()
        await task
        assert rows(database_url) == []  # a server that stops takes its row with it
    finally:
        stop.set()
        await search_pool.close()
        await write_pool.close()


@pytest.mark.parametrize("replica", [False, True])
async def test_serve_reports_only_when_search_reads_the_primary(
    database_url, openai_settings, fake_openai, replica
):
    """With SEARCH_DATABASE_URL (a replica; here the same database, which the app cannot
    tell apart) bulk work on the primary takes nothing from search: no report."""
    cfg = openai_settings(
        database_url=database_url,
        search_database_url=database_url if replica else None,
        clipembed_search_requests_per_second=0,
        clipembed_search_embeds_per_minute=0,
    )
    app = create_app(cfg)
    with serve_http(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            r = await client.get("/search", params={"q": "clip", "mode": "keyword"})
            assert r.status_code == 200
        if replica:
            assert app.state.search_report is None
            assert rows(database_url) == []
        else:

            async def reported() -> bool:
                return any(r[2] >= 1 for r in rows(database_url))

            await wait_for(reported, "serve never reported its searches")
    assert rows(database_url) == []  # stopped: its row is gone
