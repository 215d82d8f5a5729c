"""Two OS processes share one requests-per-minute limit through real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.plugins.provider import TEST_KEY

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from clipembed import settings
    from clipembed.embedding import service

    async def main():
        cfg = settings.Settings(_env_file=None)
        svc = await service.open_service(cfg)
        try:
            for i in range(int(sys.argv[2])):
                await svc.embed([f"{sys.argv[1]} text {i}"])
        finally:
            await svc.aclose()

    asyncio.run(main())
    """
)


def test_two_processes_never_exceed_one_shared_limit(fake_openai, redis_base_url, redis_prefix):
    rpm = 121  # the limiter keeps one request below: 120/min = one every 0.5 s
    env = dict(
        os.environ,
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY=TEST_KEY,
        EMBEDDING_API_BASE_URL=fake_openai.base_url,
        REDIS_URL=redis_base_url,
        CLIPEMBED_REDIS_PREFIX=redis_prefix,
        EMBEDDING_REQUESTS_PER_MINUTE=str(rpm),
        EMBEDDING_BATCH_SIZE="1",
    )
    per_process = 8
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, name, str(per_process)], env=env)
        for name in ("alpha", "beta")
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    stats = fake_openai.stats()
    times = sorted(stats["request_times"])
    assert len(times) == 2 * per_process
    # shared pacing: one request every 0.5 s across both processes, so any 2 s window holds
    # at most 5 (4 intervals + the one at its start); two independent limiters would send 8.
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 2.0)
        assert in_window <= 5, f"{in_window} requests within 2 s"
    assert times[-1] - times[0] >= (2 * per_process - 1) * 0.5 * 0.9
    # the 429 path was never needed: the limiter kept requests under the limit
    assert stats["by_status"] == {"200": 2 * per_process}


async def test_through_redis_bulk_work_yields_to_a_waiting_query(redis_base_url, redis_prefix):
    """The same priority through the Lua script: two limiters without a shared in-memory
    state, as two processes would be."""
    import asyncio

    from clipembed.embedding.cache import RedisLink
    from clipembed.embedding.ratelimit import RateLimiter
    from tests.plugins.waiting import wait_for

    link = RedisLink(redis_base_url)
    try:
        # a slot a second: the query stays registered for about a second while it waits, a
        # window a loaded machine's event loop cannot miss (at 600 rpm it was 0.1 s, and a
        # full parallel run once polled only after the query had its slot and left)
        kw = {
            "requests_per_minute": 60,
            "tokens_per_minute": 10**9,
            "link": link,
            "key": f"{redis_prefix}ratelimit:m",
        }
        bulk, query = RateLimiter(role="bulk", **kw), RateLimiter(role="query", **kw)
        order: list[str] = []
        await bulk.acquire(1)

        async def take(limiter: RateLimiter, name: str) -> None:
            await limiter.acquire(1)
            order.append(name)

        bulk_task = asyncio.create_task(take(bulk, "bulk"))
        await asyncio.sleep(0)
        query_task = asyncio.create_task(take(query, "query"))
        # the query is registered in Redis while it waits (what the bulk limiter reads)
        registered = await wait_for(
            lambda: link.client.zcard(query.waiting_key), timeout=5, what="the registration"
        )
        assert registered == 1 and order == []
        await asyncio.gather(query_task, bulk_task)
        assert order == ["query", "bulk"]
        assert await link.client.zcard(query.waiting_key) == 0
    finally:
        await link.aclose()
