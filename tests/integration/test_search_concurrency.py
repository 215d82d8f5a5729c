"""Hybrid search takes a second connection for its vector branch only when one is free: a
small pool under many concurrent searches must neither deadlock nor change any ranking."""

from __future__ import annotations

import asyncio

import pytest

from clipembed import runtime, settings
from clipembed.search import clips as clip_search
from clipembed.search import core, ranking

pytestmark = pytest.mark.local_model


async def test_concurrent_hybrid_searches_on_a_two_connection_pool(search_db, tmp_path):
    url, _ = search_db
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
        # rankings, not the deadline: on a loaded machine the local model may take over the
        # default second, and an answer degraded to keywords would differ from the one alone
        search_embed_timeout_ms=60_000,
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


async def test_a_failing_branch_leaves_both_connections_usable(search_db, tmp_path):
    """The query embedding fails while the keyword branch runs on the other connection: the
    error reaches the caller only after both branches stopped, and both connections work on."""
    from clipembed import errors

    url, _ = search_db
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
    )

    async def failing_embed():
        await asyncio.sleep(0)
        raise errors.ProviderError("provider down")

    async with runtime.open_runtime(cfg, with_service=False) as rt:
        async with rt.pool.connection() as first, rt.pool.connection() as second:
            kwargs = {
                "query": "clutch",
                "where": clip_search.Filters().where(),
                "params": core.Params(),
                "semantic_conn": second,
            }
            with pytest.raises(errors.ProviderError, match="provider down"):
                await ranking.rank(first, clip_search.CLIPS, embed_query=failing_embed, **kwargs)
            for conn in (first, second):
                assert conn.info.transaction_status.name == "IDLE"
            hits = await ranking.rank(
                first, clip_search.CLIPS, embed_query=None, **{**kwargs, "semantic_conn": None}
            )
            assert hits  # keyword-only fallback on the same connection works
        for _ in range(3):  # and the pool hands out healthy connections afterwards
            res = await clip_search.search(
                rt.pool,
                None,
                "clutch",
                params=core.Params(mode="keyword"),
                filters=clip_search.Filters(),
            )
            assert res
