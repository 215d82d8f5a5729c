"""The query lane built from its parts (provider, cache, dimensions, limiter): no service needed."""

from __future__ import annotations

import asyncio

import numpy as np

from clipembed.embedding import query_lane
from clipembed.embedding.ratelimit import RateLimiter
from tests.unit.test_service import DIMS, MemoryProvider, vector


def lane(provider: MemoryProvider) -> query_lane.QueryEmbedder:
    return query_lane.QueryEmbedder(
        provider,
        cache=None,
        dimensions=DIMS,
        limiter=RateLimiter(requests_per_minute=10**6, tokens_per_minute=10**9),
        timeout_seconds=5.0,
        coalesce_seconds=0.01,
    )


async def test_concurrent_queries_share_one_request_and_identical_texts_one_input():
    provider = MemoryProvider()
    provider.max_tokens_per_request = 4096  # room for 8 queries of 512 tokens: 3 inputs bind
    queries = lane(provider)
    assert queries.max_batch == 3
    try:
        got = await asyncio.gather(*(queries.embed(t) for t in ("a b", "c", "a b")))
    finally:
        await queries.aclose()
    assert provider.batches == [["a b", "c"]]  # within the provider's 3 inputs per request
    np.testing.assert_allclose(got[0], vector("a b"))
    np.testing.assert_allclose(got[2], got[0])
    assert queries.requests == 1 and queries.texts == 2


def test_the_batch_bound_follows_the_provider_capabilities():
    provider = MemoryProvider()
    assert lane(provider).max_batch == 1  # 12 tokens per request // 512 per query, at least 1
