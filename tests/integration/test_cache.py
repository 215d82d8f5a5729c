"""The cache against a real Redis: one MGET, pipelined SET EX, corrupt values, outages."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis.asyncio as aioredis

from clipembed.embedding import cache
from tests.plugins.waiting import wait_for


@pytest.fixture
async def link(redis_base_url):
    link = cache.RedisLink(redis_base_url)
    yield link
    await link.aclose()


def make(link, prefix, *, dims=4, ttl=3600):
    return cache.EmbeddingCache(link, prefix=prefix, model="m", dimensions=dims, ttl_seconds=ttl)


class CountingClient:
    """Counts the commands the cache issues, passing each through to the real client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.mget_calls = 0
        self.pipelines = 0

    async def mget(self, keys):
        self.mget_calls += 1
        return await self.client.mget(keys)

    def pipeline(self, **kw):
        self.pipelines += 1
        return self.client.pipeline(**kw)

    async def aclose(self):
        await self.client.aclose()


async def test_round_trip_with_one_mget_and_one_pipeline(link, redis_prefix):
    c = make(link, redis_prefix)
    counting = CountingClient(link.client)
    link.client = counting  # type: ignore[assignment]
    texts = [f"text {i}" for i in range(50)]
    vectors = [np.full(4, i, np.float32) + 0.5 for i in range(50)]
    assert await c.get_many(texts) == [None] * 50
    await c.set_many(list(zip(texts, vectors, strict=True)))
    got = await c.get_many(["missing", *texts])
    assert got[0] is None
    for vec, want in zip(got[1:], vectors, strict=True):
        np.testing.assert_array_equal(vec, want)
    assert (counting.mget_calls, counting.pipelines) == (2, 1)


async def test_values_are_binary_with_the_ttl(link, redis_prefix):
    c = make(link, redis_prefix, dims=768, ttl=30 * 24 * 3600)
    vec = np.linspace(-1, 1, 768, dtype=np.float32)
    await c.set_many([("clip", vec)])
    raw = await link.client.get(c.key("clip"))
    assert raw == vec.astype("<f4").tobytes() and len(raw) == 3072
    ttl = await link.client.ttl(c.key("clip"))
    assert 30 * 24 * 3600 - 60 < ttl <= 30 * 24 * 3600
    assert c.key("clip").startswith(redis_prefix + "embedding:")


async def test_ttl_zero_stores_nothing(link, redis_prefix):
    c = make(link, redis_prefix, ttl=0)
    await c.set_many([("clip", np.ones(4, np.float32))])
    assert await link.client.exists(c.key("clip")) == 0


async def test_corrupt_or_foreign_values_are_misses(link, redis_prefix):
    c = make(link, redis_prefix)
    await link.client.set(c.key("short"), b"\x00\x01")
    await link.client.set(c.key("nan"), np.array([np.nan, 0, 0, 1], "<f4").tobytes())
    await link.client.set(c.key("json"), b"[1.0, 2.0, 3.0, 4.0]")
    await link.client.set(c.key("ok"), np.ones(4, "<f4").tobytes())
    got = await c.get_many(["short", "nan", "json", "ok"])
    assert got[:3] == [None, None, None]
    np.testing.assert_array_equal(got[3], np.ones(4, np.float32))


async def test_redis_outage_is_said_once_and_recovered_from(redis_process, redis_prefix, caplog):
    link = cache.RedisLink(redis_process.url, retry_after=0.2)
    c = make(link, redis_prefix)
    try:
        await c.set_many([("a", np.ones(4, np.float32))])
        redis_process.stop()
        with caplog.at_level(logging.WARNING, logger="clipembed.embedding.cache"):
            for _ in range(3):
                assert await c.get_many(["a"]) == [None]
                await c.set_many([("b", np.ones(4, np.float32))])
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert not link.available  # no timeouts paid while it is known to be down
        redis_process.start()
        # a ping through the link only reaches Redis once its 0.2 s back-off has ended
        await wait_for(link.ping, what="the link to reach the restarted Redis")
        await c.set_many([("b", np.full(4, 2, np.float32))])
        got = await c.get_many(["b"])
        assert got[0] is not None and got[0][0] == 2.0
    finally:
        await link.aclose()
