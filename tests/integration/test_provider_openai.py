"""The openai provider over real HTTP against the fake server: vectors, order, faults, secrets."""

from __future__ import annotations

import numpy as np
import pytest

from clipembed import errors
from clipembed.embedding import providers
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.provider import TEST_KEY


@pytest.fixture
async def provider(openai_settings):
    p = providers.create(openai_settings())
    yield p
    await p.aclose()


async def test_vectors_in_order_with_dimensions_sent(provider, fake_openai):
    texts = ["a", "日本語のタイトル", "레전드 클러치 🔥"]
    resp = await provider.embed(texts)
    for text, vec in zip(texts, resp.vectors, strict=True):
        np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    stats = fake_openai.stats()
    assert stats["dimensions_seen"] == [768]
    assert resp.tokens == stats["tokens"] > 0


async def test_shuffled_answer_is_reordered_by_index(provider, fake_openai):
    fake_openai.control(plan=["shuffled"])
    texts = [f"text {i}" for i in range(5)]
    resp = await provider.embed(texts)
    for text, vec in zip(texts, resp.vectors, strict=True):
        np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)


@pytest.mark.parametrize(
    ("fault", "kind", "fragment"),
    [
        ("429", errors.RateLimitedError, "429"),
        ("500", errors.RetryableProviderError, "500"),
        ("wrong_dims", errors.InvalidResponseError, "length 769"),
        ("nan", errors.InvalidResponseError, "NaN"),
        ("garbage", errors.InvalidResponseError, "unparsable"),
        ("wrong_count", errors.InvalidResponseError, "1 vectors for 2"),
    ],
)
async def test_each_fault_is_the_right_error(provider, fake_openai, fault, kind, fragment):
    fake_openai.control(plan=[fault])
    with pytest.raises(kind, match=fragment) as info:
        await provider.embed(["x", "y"])
    assert TEST_KEY not in str(info.value)


async def test_429_carries_retry_after(provider, fake_openai):
    fake_openai.control(plan=["429"], retry_after_ms=1234)
    with pytest.raises(errors.RateLimitedError) as info:
        await provider.embed(["x"])
    assert info.value.retry_after == pytest.approx(1.234)


async def test_timeout_is_retryable(openai_settings, fake_openai):
    p = providers.create(openai_settings(embedding_timeout_seconds=0.3))
    fake_openai.control(plan=["slow"], slow_seconds=2)
    try:
        with pytest.raises(errors.RetryableProviderError, match="timed out"):
            await p.embed(["x"])
    finally:
        await p.aclose()


async def test_connection_refused_is_retryable(openai_settings):
    from clipembed.testing import servers

    p = providers.create(
        openai_settings(embedding_api_base_url=f"http://127.0.0.1:{servers.free_port()}/v1")
    )
    try:
        with pytest.raises(errors.RetryableProviderError, match="cannot reach"):
            await p.embed(["x"])
    finally:
        await p.aclose()


async def test_wrong_key_is_permanent_and_never_echoed(openai_settings, fake_openai):
    fake_openai.control(api_key="sk-the-right-key-000000")
    p = providers.create(openai_settings())
    try:
        with pytest.raises(errors.PermanentProviderError, match="401") as info:
            await p.embed(["x"])
    finally:
        await p.aclose()
    assert TEST_KEY not in str(info.value)
    assert TEST_KEY not in repr(info.value)
    assert TEST_KEY not in repr(p)


async def test_empty_string_is_rejected_by_the_server_as_permanent(provider):
    with pytest.raises(errors.PermanentProviderError, match="400"):
        await provider.embed([""])


def test_ada_002_does_not_send_dimensions(openai_settings):
    p = providers.create(
        openai_settings(embedding_model="text-embedding-ada-002", embedding_dimensions=1536)
    )
    assert p._send_dimensions is False


async def test_dimensions_on_every_request_and_none_for_ada(openai_settings, fake_openai):
    p = providers.create(openai_settings(embedding_dimensions=256))
    try:
        for i in range(3):
            await p.embed([f"t{i}"])
    finally:
        await p.aclose()
    assert fake_openai.stats()["dimensions_seen"] == [256]
    assert fake_openai.stats()["requests_without_dimensions"] == 0
    ada = providers.create(
        openai_settings(embedding_model="text-embedding-ada-002", embedding_dimensions=1536)
    )
    try:
        resp = await ada.embed(["x"])  # the fake rejects `dimensions` for ada, like the API
    finally:
        await ada.aclose()
    assert resp.vectors.shape == (1, 1536)
    assert fake_openai.stats()["requests_without_dimensions"] == 1


async def test_ratelimit_headers_reach_the_response(openai_settings, fake_openai_factory):
    server = fake_openai_factory(rpm=5, tpm=1000)
    p = providers.create(openai_settings(embedding_api_base_url=server.base_url))
    try:
        resp = await p.embed(["hello world"])
        info = resp.ratelimit
        assert (info.limit_requests, info.remaining_requests) == (5, 4)
        assert (info.limit_tokens, info.remaining_tokens) == (1000, 998)
        assert 0 < info.reset_requests <= 60 and 0 < info.reset_tokens <= 60
        for _ in range(4):
            await p.embed(["x"])
        with pytest.raises(errors.RateLimitedError) as caught:
            await p.embed(["x"])
    finally:
        await p.aclose()
    assert 55 <= caught.value.retry_after <= 60.1  # the window frees a slot in ~60 s


async def test_slow_answer_within_the_timeout_is_fine(openai_settings, fake_openai):
    p = providers.create(openai_settings(embedding_timeout_seconds=5))
    fake_openai.control(plan=["slow"], slow_seconds=0.3)
    try:
        resp = await p.embed(["x"])
    finally:
        await p.aclose()
    np.testing.assert_allclose(resp.vectors[0], expected_vector("x", 768), rtol=1e-6)


async def test_requests_in_flight_share_a_pool_of_connections(openai_settings, fake_openai):
    import asyncio

    fake_openai.control(latency_ms=50)
    p = providers.create(openai_settings(embedding_max_concurrency=2))
    try:
        results = await asyncio.gather(*(p.embed([f"t{i}"]) for i in range(6)))
    finally:
        await p.aclose()
    for i, resp in enumerate(results):
        np.testing.assert_allclose(resp.vectors[0], expected_vector(f"t{i}", 768), rtol=1e-6)
