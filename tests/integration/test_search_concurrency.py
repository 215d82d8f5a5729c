"""Hybrid search takes a second connection for its vector branch only when one is free: a
small pool under many concurrent searches must neither deadlock nor change any ranking."""

from __future__ import annotations

import asyncio

import pytest

from clipembed import runtime, settings
from clipembed.search import clips as clip_search
from clipembed.search import core

pytestmark = pytest.mark.local_model


async def test_concurrent_hybrid_searches_on_a_two_connection_pool(search_db, tmp_path):
    url, _ = search_db
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
    )
    queries = ["clutch", "funny bug", "castle", "police chase", "boss fight", "pasta"] * 2
    async with runtime.open_runtime(cfg, pool_max_size=2) as rt:

        async def hybrid(q: str) -> list[object]:
            results = await clip_search.search(
                rt.pool, rt.service, q, params=core.Params(limit=5), filters=clip_search.Filters()
            )
            return [r["id"] for r in results]

        alone = {q: await hybrid(q) for q in set(queries)}  # one at a time: spare is free
        # all at once: every search holds one of the two connections; none may wait for a
        # second (a deadlock would surface as the pool's PoolTimeout after 30 s)
        together = await asyncio.wait_for(asyncio.gather(*(hybrid(q) for q in queries)), 120)
    assert together == [alone[q] for q in queries]
    assert all(together)
