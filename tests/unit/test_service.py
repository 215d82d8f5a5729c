"""The service's logic with an in-memory provider: order, dedupe, isolation, retries, stats.

No network, no Redis: the provider below is a few lines of Python that records what it was
sent and fails on command. (The same behaviours over real HTTP and Redis are in
tests/integration/test_service.py.)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipembed import errors
from clipembed import settings as settings_mod
from clipembed.embedding import service
from clipembed.embedding.providers import base
from clipembed.embedding.providers.capabilities import Capabilities
from clipembed.embedding.ratelimit import RateLimiter
from tests.plugins.waiting import wait_for

DIMS = 8


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vec = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
    return vec / np.linalg.norm(vec)


class MemoryProvider:
    """Words are tokens; ``fail`` holds exceptions to raise, one per request, before answering."""

    name = "memory"
    capabilities = Capabilities(
        remote=True,
        rate_limited=True,
        parallel_requests=True,
        batch_api=False,
        needs_api_key=False,
        model_paths=False,
        default_model="memory-model",
        default_dimensions=DIMS,
    )
    model = "memory-model"
    dimensions = DIMS
    max_input_tokens = 5
    max_inputs_per_request = 3
    max_tokens_per_request = 12

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail: list[BaseException] = []
        self.poison: set[str] = set()
        self.wrong_dims_next = 0
        self.gate: asyncio.Event | None = None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str) -> str:
        return " ".join(text.split()[: self.max_input_tokens])

    def prepare_batch(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        sent = [self.truncate(t) for t in texts]
        return sent, [self.count_tokens(t) for t in sent]

    async def embed(self, texts: Sequence[str]) -> base.EmbeddingResponse:
        self.batches.append(list(texts))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise self.fail.pop(0)
        if self.poison & set(texts):
            raise errors.PermanentProviderError("400: input rejected", status_code=400)
        assert len(texts) <= self.max_inputs_per_request
        assert sum(map(self.count_tokens, texts)) <= self.max_tokens_per_request
        vectors = np.stack([vector(t) for t in texts])
        if self.wrong_dims_next:
            self.wrong_dims_next -= 1
            vectors = np.hstack([vectors, vectors])  # a provider that forgot to validate
        return base.EmbeddingResponse(vectors=vectors, tokens=sum(map(self.count_tokens, texts)))

    async def aclose(self) -> None:
        pass

    @property
    def sent(self) -> list[str]:
        return [t for b in self.batches for t in b]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(service, "BACKOFF_BASE", 0.001)


def make(provider: MemoryProvider | None = None, **overrides) -> service.EmbeddingService:
    cfg = settings_mod.Settings(
        _env_file=None,
        embedding_provider="openai",
        openai_api_key="sk-unit",
        redis_url="none",
        **overrides,
    )
    limiter = RateLimiter(requests_per_minute=10**6, tokens_per_minute=10**9)
    return service.EmbeddingService(provider or MemoryProvider(), settings=cfg, limiter=limiter)


def assert_vectors(texts, vectors):
    for text, vec in zip(texts, vectors, strict=True):
        np.testing.assert_array_equal(vec, vector(text))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["a", "b c", "d e f", "g", "h i j k", "a"]), max_size=30))
async def test_order_kept_each_distinct_text_sent_once_batches_within_limits(texts):
    svc = make()
    result = await svc.embed(texts)
    assert result.vectors.shape == (len(texts), DIMS)
    assert_vectors(texts, result.vectors)
    assert sorted(svc.provider.sent) == sorted(set(texts))
    assert result.stats.deduplicated == len(texts) - len(set(texts))
    assert result.stats.requests == len(svc.provider.batches)


async def test_sanitised_text_is_what_is_sent_and_truncation_is_by_tokens():
    svc = make()
    long = "one two three four five six seven"
    await svc.embed(["  Insane\u0000 clutch!\n\n", long])
    assert svc.provider.sent == ["Insane clutch!", "one two three four five"]
    assert svc.prepare("  a\tb ") == "a b"
    assert svc.count_tokens(long) == 5


async def test_empty_texts_fail_alone_with_a_clear_error():
    svc = make()
    outcome = await svc.embed_detailed(["ok", "", " \u200b\u0007 "])
    assert outcome.errors[0] is None
    for err in outcome.errors[1:]:
        assert isinstance(err, errors.PermanentProviderError) and "empty" in str(err)
    assert svc.provider.sent == ["ok"]
    with pytest.raises(errors.PermanentProviderError, match="empty"):
        await svc.embed(["ok", ""])


async def test_poison_text_is_isolated_by_halving():
    provider = MemoryProvider()
    provider.max_inputs_per_request = 8
    provider.max_tokens_per_request = 100
    provider.poison = {"p"}
    svc = make(provider)
    texts = [f"t{i}" for i in range(7)] + ["p"]
    outcome = await svc.embed_detailed(texts)
    assert [e is not None for e in outcome.errors] == [False] * 7 + [True]
    assert_vectors(texts[:7], outcome.vectors[:7])
    # 8 -> 4+4 -> 2+2 -> 1+1: 1 + 2 + 2 + 2 requests, not one per text
    assert len(provider.batches) == 7
    assert outcome.stats.failures == 1 and outcome.stats.retries == 0


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_an_auth_or_model_error_is_not_split(status):
    provider = MemoryProvider()
    provider.fail = [errors.PermanentProviderError(f"{status}", status_code=status)]
    svc = make(provider)
    outcome = await svc.embed_detailed(["a", "b", "c"])
    assert all(isinstance(e, errors.PermanentProviderError) for e in outcome.errors)
    assert len(provider.batches) == 1


async def test_retryable_errors_are_retried_then_succeed():
    provider = MemoryProvider()
    provider.fail = [
        errors.RetryableProviderError("502", status_code=502),
        errors.RateLimitedError("429", retry_after=0.001),
    ]
    svc = make(provider)
    result = await svc.embed(["a", "b"])
    assert_vectors(["a", "b"], result.vectors)
    assert (result.stats.retries, result.stats.rate_limited, result.stats.requests) == (2, 1, 3)


async def test_attempts_are_bounded_and_the_last_error_is_reported():
    provider = MemoryProvider()
    provider.fail = [errors.RetryableProviderError(f"500 #{i}", status_code=500) for i in range(5)]
    svc = make(provider, embedding_max_attempts=3)
    outcome = await svc.embed_detailed(["a"])
    assert str(outcome.errors[0]) == "500 #2"
    assert len(provider.batches) == 3 and outcome.vectors == [None]


async def test_an_unvalidated_wrong_vector_never_comes_back():
    provider = MemoryProvider()
    provider.wrong_dims_next = 1
    svc = make(provider)
    result = await svc.embed(["a"])
    assert_vectors(["a"], result.vectors)
    assert result.stats.retries == 1
    provider.wrong_dims_next = 5
    outcome = await svc.embed_detailed(["b"])
    assert isinstance(outcome.errors[0], errors.InvalidResponseError)
    assert outcome.vectors == [None]


async def test_concurrent_calls_share_one_request_for_the_same_text():
    provider = MemoryProvider()
    provider.gate = asyncio.Event()
    svc = make(provider)
    first = asyncio.create_task(svc.embed(["same", "x"]))
    await wait_for(lambda: len(provider.batches) == 1, what="the first call's request")
    second = asyncio.create_task(svc.embed(["same", "y"]))
    # "same" is in flight, so the second call sends only "y" and awaits the first's "same"
    await wait_for(lambda: len(provider.batches) == 2, what="the second call's request")
    provider.gate.set()
    a, b = await asyncio.gather(first, second)
    assert_vectors(["same", "x"], a.vectors)
    assert_vectors(["same", "y"], b.vectors)
    assert sorted(provider.sent) == ["same", "x", "y"]


class GatedCache:
    """The embedding cache's two calls in memory; ``set_many`` waits for ``stored`` to open, as
    a Redis write still on its way does."""

    def __init__(self) -> None:
        self.values: dict[str, np.ndarray] = {}
        self.stored = asyncio.Event()
        self.writing = asyncio.Event()

    async def get_many(self, texts):
        return [self.values.get(t) for t in texts]

    async def set_many(self, items):
        self.writing.set()
        await self.stored.wait()
        self.values.update(items)


async def test_a_text_answered_but_not_yet_cached_is_not_sent_again():
    """Single flight lasts until the vector is in the cache: a call that comes between the
    provider's answer and the cache write awaits the first call's vector. (The claim used to
    end with the answer; the second call then missed the cache and paid for the text again:
    seen once as a text embedded twice in a backfill under a parallel CPU load.)"""
    provider = MemoryProvider()
    svc = make(provider)
    svc.cache = GatedCache()  # type: ignore[assignment]
    first = asyncio.create_task(svc.embed(["same"]))
    await wait_for(svc.cache.writing.is_set, what="the first call's cache write")
    second = asyncio.create_task(svc.embed(["same"]))
    for _ in range(50):  # let the second call run as far as it can (no clock involved)
        await asyncio.sleep(0)
    svc.cache.stored.set()
    a, b = await asyncio.gather(first, second)
    assert_vectors(["same"], a.vectors)
    assert_vectors(["same"], b.vectors)
    assert provider.sent == ["same"]
    third = await svc.embed(["same"])  # released once cached: a later call hits the cache
    assert third.from_cache == [True] and provider.sent == ["same"]


async def test_stats_add_up_across_calls():
    svc = make()
    await svc.embed(["a", "a", "b"])
    await svc.embed(["c"])
    s = svc.stats
    assert (s.texts, s.deduplicated, s.requests, s.tokens, s.failures) == (4, 1, 2, 3, 0)
    assert s.cache_hits == 0 and s.cache_hit_rate == 0.0


async def test_no_texts_is_no_request():
    svc = make()
    result = await svc.embed([])
    assert result.vectors.shape == (0, DIMS) and svc.provider.batches == []
