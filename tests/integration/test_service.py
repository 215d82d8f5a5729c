"""The embedding service against real Redis and the fake provider over HTTP."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from clipembed import errors
from clipembed.embedding import service
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.provider import TEST_KEY
from tests.plugins.waiting import wait_for


@pytest.fixture
async def make_service(openai_settings):
    opened = []

    async def make(**overrides):
        svc = await service.open_service(openai_settings(**overrides))
        opened.append(svc)
        return svc

    yield make
    for svc in opened:
        await svc.aclose()


def assert_correct(texts, vectors):
    for text, vec in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)


async def test_second_embed_sends_no_request(make_service, fake_openai):
    texts = [f"clip {i}" for i in range(150)]
    first = await (await make_service()).embed(texts)
    assert_correct(texts, first.vectors)
    sent = fake_openai.stats()["requests"]
    assert sent == 2  # 150 inputs at 100 per request
    # a new service (a new process, as far as the cache knows) finds everything in Redis
    second = await (await make_service()).embed(texts)
    assert fake_openai.stats()["requests"] == sent
    assert all(second.from_cache) and second.stats.cache_hits == 150
    assert_correct(texts, second.vectors)


async def test_batches_respect_size_and_duplicates_are_embedded_once(make_service, fake_openai):
    svc = await make_service(embedding_batch_size=7)
    texts = ["same"] * 5 + [f"t{i}" for i in range(20)] + ["same"]
    result = await svc.embed(texts)
    stats = fake_openai.stats()
    assert stats["max_inputs"] <= 7
    assert stats["embedded_more_than_once"] == 0
    assert stats["inputs"] == 21
    assert result.stats.deduplicated == 5
    assert_correct(texts, result.vectors)


async def test_order_kept_with_mixed_cache_hits(make_service):
    svc = await make_service()
    await svc.embed(["b", "d"])
    texts = ["a", "b", "c", "d", "e"]
    result = await svc.embed(texts)
    assert result.from_cache == [False, True, False, True, False]
    assert_correct(texts, result.vectors)


@pytest.mark.parametrize(
    "fault", ["429", "500", "wrong_dims", "nan", "garbage", "wrong_count", "slow"]
)
async def test_single_fault_is_retried_to_a_correct_vector(make_service, fake_openai, fault):
    svc = await make_service(embedding_timeout_seconds=0.5)
    fake_openai.control(plan=[fault], slow_seconds=1.5, retry_after_ms=50)
    texts = ["one", "two", "three"]
    result = await svc.embed(texts)
    assert_correct(texts, result.vectors)
    assert result.stats.retries == 1


async def test_persistent_faults_end_in_a_clear_error_and_nothing_cached(make_service, fake_openai):
    svc = await make_service()
    fake_openai.control(plan=["wrong_dims", "nan", "wrong_dims"])
    outcome = await svc.embed_detailed(["poisoned"])
    assert outcome.vectors == [None]
    assert isinstance(outcome.errors[0], errors.InvalidResponseError)
    # nothing wrong was cached: the next call goes to the provider and gets the right vector
    result = await svc.embed(["poisoned"])
    assert result.from_cache == [False]
    assert_correct(["poisoned"], result.vectors)


async def test_permanent_error_is_not_retried(make_service, fake_openai):
    fake_openai.control(api_key="sk-other-key-xxxxxxxxxxxx")
    svc = await make_service()
    with pytest.raises(errors.PermanentProviderError):
        await svc.embed(["x", "y"])
    assert fake_openai.stats()["requests"] == 1


async def test_poison_text_fails_alone(make_service, fake_openai):
    svc = await make_service()
    # an input over the server's per-input token limit makes the whole batch a 400; the
    # service splits the batch until the culprit is alone. (The service truncates to the
    # provider's own limit, so we lower the provider's idea of it to let one through.)
    svc.provider.max_input_tokens = 100_000
    poison = "word " * 9000
    texts = ["ok 1", "ok 2", poison, "ok 3"]
    outcome = await svc.embed_detailed(texts)
    assert [e is None for e in outcome.errors] == [True, True, False, True]
    assert isinstance(outcome.errors[2], errors.PermanentProviderError)
    assert_correct(["ok 1", "ok 2", "ok 3"], [outcome.vectors[i] for i in (0, 1, 3)])


async def test_overlong_input_is_truncated_not_rejected(make_service, fake_openai):
    svc = await make_service()
    text = "clip " * 20_000  # ~20k tokens, over the 8,191 limit
    result = await svc.embed([text])
    assert result.vectors.shape == (1, 768)
    assert fake_openai.stats()["by_status"] == {"200": 1}


async def test_empty_text_is_a_per_text_error(make_service, fake_openai):
    svc = await make_service()
    outcome = await svc.embed_detailed(["fine", "  \u200b ", ""])
    assert outcome.errors[0] is None
    assert "empty" in str(outcome.errors[1]) and "empty" in str(outcome.errors[2])
    assert fake_openai.stats()["inputs"] == 1


async def test_redis_stopping_mid_run_degrades_to_uncached(
    openai_settings, redis_process, fake_openai, caplog
):
    svc = await service.open_service(openai_settings(redis_url=redis_process.url))
    try:
        await svc.embed(["before"])
        redis_process.stop()
        with caplog.at_level(logging.WARNING):
            first = await svc.embed(["after 1"])
            second = await svc.embed(["after 2", "before"])
        assert_correct(["after 1"], first.vectors)
        assert_correct(["after 2", "before"], second.vectors)
        warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(warnings) == 1  # said once, not per call
    finally:
        await svc.aclose()


async def test_no_redis_at_all(openai_settings, fake_openai):
    from clipembed.testing import servers

    svc = await service.open_service(
        openai_settings(redis_url=f"redis://127.0.0.1:{servers.free_port()}/0")
    )
    try:
        assert_correct(["x"], (await svc.embed(["x"])).vectors)
        assert_correct(["x"], (await svc.embed(["x"])).vectors)
        assert fake_openai.stats()["requests"] == 2
    finally:
        await svc.aclose()


async def test_api_key_never_in_logs_errors_or_reprs(make_service, fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    svc = await make_service()
    fake_openai.control(plan=["500", "429", "garbage"], retry_after_ms=10)
    outcome = await svc.embed_detailed(["x"])
    fake_openai.control(api_key="sk-different-000000000000")
    bad = await svc.embed_detailed(["y"])
    texts = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    texts += [repr(svc), repr(svc.provider), repr(svc.settings), str(svc.settings.model_dump())]
    texts += [str(e) + repr(e) for e in outcome.errors + bad.errors if e is not None]
    assert bad.errors[0] is not None
    for text in texts:
        assert TEST_KEY not in text


async def test_tight_provider_limit_all_texts_back_with_few_429s(make_service, fake_openai):
    fake_openai.control(rpm=300)
    svc = await make_service(embedding_requests_per_minute=300, embedding_batch_size=5)
    texts = [f"clip number {i}" for i in range(60)]  # 12 requests
    result = await svc.embed(texts)
    assert_correct(texts, result.vectors)
    assert fake_openai.stats()["by_status"].get("429", 0) == 0


async def test_provider_429_storm_is_ridden_out(make_service, fake_openai):
    svc = await make_service(embedding_batch_size=10, embedding_max_attempts=5)
    fake_openai.control(plan=["429", "429", "429", "429"], retry_after_ms=100)
    texts = [f"storm {i}" for i in range(20)]
    result = await svc.embed(texts)
    assert_correct(texts, result.vectors)
    assert result.stats.rate_limited == 4


async def test_provider_headers_tighten_a_too_generous_configured_limit(make_service, fake_openai):
    # The key's real tier allows 2 requests a minute; the configuration believes 100,000.
    fake_openai.control(rpm=2)
    # no query reserve here: bulk work gets the whole (tiny) budget
    svc = await make_service(embedding_max_concurrency=1, embedding_query_reserve=0.0)
    await svc.embed(["a"])
    assert svc.limiter.requests_per_minute == 2  # adopted from x-ratelimit-limit-requests
    await svc.embed(["b"])
    # the budget is spent: the third request waits instead of being sent into a 429
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(svc.embed(["c"]), timeout=1.0)
    assert fake_openai.stats()["by_status"] == {"200": 2}


async def test_a_429_holds_every_service_sharing_the_limit(make_service, fake_openai):
    # two services on one Redis prefix stand for two processes sharing one key
    first, second = await make_service(), await make_service()
    fake_openai.control(plan=["429"], retry_after_ms=1500)
    task = asyncio.create_task(first.embed(["a"]))
    limiter = first.limiter
    assert limiter.link is not None and limiter.key == second.limiter.key
    # the 429 has been seen and its block written to the shared state in Redis
    await wait_for(
        lambda: limiter.link.client.hexists(limiter.key, "blocked"),
        what="the first service to write the 429's block to Redis",
    )
    other = await second.embed(["b"])
    await task
    assert_correct(["b"], other.vectors)
    times = fake_openai.stats()["request_times"]
    assert fake_openai.stats()["by_status"] == {"200": 2, "429": 1}
    # neither the retry nor the other service's request went before retry-after elapsed
    assert min(times[1:]) - times[0] >= 1.4
