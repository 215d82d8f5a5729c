"""The query lane and graceful degradation, over real HTTP against the fake provider.

A provider that hangs or fails must never turn a search into a 5xx while the database can
answer: hybrid answers from its keyword branch and says so; semantic-only answers 503 with a
safe message and Retry-After. Concurrent queries are coalesced into few provider requests.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from clipembed import errors, runtime
from clipembed.bulk import backfill
from clipembed.embedding import service
from tests.integration.test_search_http import bare_app, serve
from tests.plugins.jobs import clip_record, load_clips

# The search's deadline for the query embedding: far above a working fake's answer on a busy
# machine (300 ms once degraded a working provider's search in a full run), far below the 30 s
# of the hanging one, so both outcomes are told apart by cause, not by timing.
TIMEOUT_MS = 3000


@pytest.fixture
async def db(database_factory, tmp_path, openai_settings):
    url = database_factory.new(dimensions=768)
    await load_clips(url, [clip_record(i) for i in range(30)], tmp_path)
    cfg = openai_settings(database_url=url)
    async with runtime.open_runtime(cfg) as rt:
        summary = await backfill.run(rt)
    assert summary.processed == 30
    return url


@pytest.fixture
def http(db, openai_settings):
    cfg = openai_settings(database_url=db, search_embed_timeout_ms=TIMEOUT_MS)
    with serve(bare_app(cfg, with_service=True)) as client:
        yield client


def test_a_working_provider_answers_hybrid_undegraded(http):
    r = http.get("/search", params={"q": "clutch play number 7"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["degraded"] == [] and body["results"]
    assert any(hit["semantic"] for hit in body["results"])


def test_a_hanging_provider_degrades_hybrid_to_keywords(http, fake_openai):
    fake_openai.control(plan=["slow"] * 20, slow_seconds=30)
    started = time.monotonic()
    r = http.get("/search", params={"q": "clutch play number 8"})
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["degraded"] == ["semantic"]
    assert body["results"][0]["title"] == "clutch play number 8"
    assert all(hit["semantic"] is None for hit in body["results"])
    assert elapsed < 10  # it did not wait for the 30 s answer (latency: bench/, not here)


@pytest.mark.parametrize("fault", ["500", "429", "quota", "garbage"])
def test_semantic_mode_without_a_provider_is_503_with_retry_after_and_no_provider_text(
    http, fake_openai, fault
):
    fake_openai.control(plan=[fault] * 20)
    r = http.get("/search", params={"q": f"a query for {fault}", "mode": "semantic"})
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    detail = r.json()["detail"]
    assert "unavailable" in detail
    for leaked in ("quota", "server had an error", "Rate limit", "Bad Gateway", "sk-"):
        assert leaked not in detail
    hybrid = http.get("/search", params={"q": f"a query for {fault} again"})
    assert hybrid.status_code == 200 and hybrid.json()["degraded"] == ["semantic"]


def test_keyword_mode_never_calls_the_provider(http, fake_openai):
    before = fake_openai.stats()["requests"]
    fake_openai.control(plan=["slow"] * 5, slow_seconds=30)
    r = http.get("/search", params={"q": "clutch", "mode": "keyword"})
    assert r.status_code == 200 and r.json()["degraded"] == []
    assert fake_openai.stats()["requests"] == before


async def test_concurrent_queries_are_coalesced_into_few_requests(openai_settings, fake_openai):
    svc = await service.open_service(openai_settings(search_coalesce_ms=20, redis_url="none"))
    try:
        fake_openai.control(latency_ms=100)
        before = fake_openai.stats()["requests"]
        texts = [f"distinct query {i}" for i in range(40)] + ["distinct query 0"] * 5
        vectors = await asyncio.gather(*(svc.queries.embed(t) for t in texts))
        sent = fake_openai.stats()["requests"] - before
        assert sent <= 3, sent  # 45 queries, 40 distinct: one or two batched requests
        assert svc.queries.texts == 40  # the duplicates shared one input
        from clipembed.testing.fakeopenai import expected_vector

        for text, vector in zip(texts, vectors, strict=True):
            assert vector == pytest.approx(expected_vector(text, 768), abs=1e-6)
    finally:
        await svc.aclose()


async def test_one_budget_with_queries_first(openai_settings):
    """Priority, not partition (issue 18): bulk work and queries pace on the whole budget, under
    one key, bulk work yielding to queries; EMBEDDING_QUERY_RESERVE=0 turns the priority off."""
    svc = await service.open_service(
        openai_settings(embedding_requests_per_minute=1000, embedding_query_reserve=0.2)
    )
    try:
        assert svc.limiter.requests_per_minute == 1000
        assert svc.queries.limiter.requests_per_minute == 1000
        assert svc.limiter.key == svc.queries.limiter.key
        assert (svc.limiter.role, svc.queries.limiter.role) == ("bulk", "query")
    finally:
        await svc.aclose()
    svc = await service.open_service(
        openai_settings(embedding_requests_per_minute=1000, embedding_query_reserve=0.0)
    )
    try:
        assert (svc.limiter.role, svc.queries.limiter.role) == ("any", "any")
    finally:
        await svc.aclose()


async def test_quota_exhaustion_fails_the_batch_whole_without_splitting(
    openai_settings, fake_openai
):
    svc = await service.open_service(openai_settings(redis_url="none"))
    try:
        fake_openai.control(plan=["quota"] * 50)
        before = fake_openai.stats()["requests"]
        outcome = await svc.embed_detailed([f"text {i}" for i in range(16)])
        assert fake_openai.stats()["requests"] - before == 1  # not ~31 requests by halving
        assert all(isinstance(e, errors.QuotaExceededError) for e in outcome.errors)
        assert "quota" in str(outcome.errors[0])  # the operator's log says why
    finally:
        await svc.aclose()
