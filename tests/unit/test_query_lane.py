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


class CountingProvider(MemoryProvider):
    """Counts the texts each ``prepare_batch`` call tokenizes."""

    max_inputs_per_request = 8
    max_tokens_per_request = 8 * 512

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[list[str]] = []

    def prepare_batch(self, texts):
        self.prepared.append(list(texts))
        return super().prepare_batch(texts)


async def test_each_query_is_prepared_once_without_a_budget_to_count_for():
    """A local model has no rate budget: the lane tokenizes each batch once, for the encode
    (it tokenized twice, once to count tokens nobody limited). Over-long queries are still cut
    to the model's limit."""
    provider = CountingProvider()
    queries = lane(provider)
    queries.limiter = RateLimiter(requests_per_minute=1, tokens_per_minute=1, enabled=False)
    long = "one two three four five six seven"
    try:
        got = await asyncio.gather(*(queries.embed(t) for t in ("a b", long)))
    finally:
        await queries.aclose()
    assert provider.prepared == [["a b", long]]
    assert provider.batches == [["a b", "one two three four five"]]
    np.testing.assert_allclose(got[1], vector("one two three four five"))


async def test_with_a_budget_only_queries_that_joined_late_are_prepared_again():
    """The tokens counted for the rate budget come from the same preparation the request
    sends; a query that joined while the budget was taken is prepared on its own."""
    provider = CountingProvider()
    queries = lane(provider)
    release = asyncio.Event()
    acquire = queries.limiter.acquire

    async def slow_acquire(tokens: int) -> None:
        await release.wait()
        await acquire(tokens)

    queries.limiter.acquire = slow_acquire  # type: ignore[method-assign]
    try:
        first = asyncio.ensure_future(queries.embed("a b"))
        async with asyncio.timeout(5):
            while not provider.prepared:  # until the request waits for its budget
                await asyncio.sleep(0.001)
        late = asyncio.ensure_future(queries.embed("c d e f g h"))
        await asyncio.sleep(0)
        release.set()
        got = await asyncio.gather(first, late)
    finally:
        await queries.aclose()
    assert provider.prepared == [["a b"], ["c d e f g h"]]
    assert provider.batches == [["a b", "c d e f g"]]
    np.testing.assert_allclose(got[1], vector("c d e f g"))
