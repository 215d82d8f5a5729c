"""Queries first, one budget (issue 18): the query lane and bulk work on one rate limit.

Against the fake provider in this process (every answer takes ``--latency-ms``, 100 by
default) and the 3,504 real clips, with the default budget (500 requests/min):

1. **Searches alone**: 200 unique semantic searches from 64 concurrent clients. Target: 200
   answers, <= 50 provider requests (before: 193 of 200 answered 503 in 4 s).
2. **Searches while a backfill saturates the budget** (``backfill --force``, ``--batch`` clips
   per request, 10 by default: 351 requests, about 42 s at 500 requests/min): every search
   answered (degraded at worst), p95 <= 1.5 s, and the backfill still gets >= 0.85 of the
   budget over its run. The run must be long against its fixed costs (reading the clips at
   the start, the index rebuild at the end): at 50 clips per request it lasts 10 s, and the
   same backfill *alone* reached only 0.861 of the budget, which bounds what it can show.
3. **A rate-limited backfill alone** (600 requests/min, 10 clips per request): >= 0.97 of the
   request ceiling (before: 0.86, the idle reserve lost to it).

    python -m bench.query_priority [--latency-ms 100] [--batch 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, query_lane
from clipembed import errors, runtime, settings
from clipembed.bulk import backfill, importer
from clipembed.db import connection, migrations
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.testing.fakeopenai import FakeOpenAI

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch"


def query_texts(count: int, skip: int = 0) -> list[str]:
    """Distinct real stream titles (never clip titles: nothing is cached)."""
    return query_lane.query_texts(count + skip)[skip:]


def pct(values: list[float], q: float) -> float:
    return common.quantile(values, q) or 0.0


def cfg_for(url: str, home: Path, base_url: str, **over: Any) -> settings.Settings:
    values: dict[str, Any] = {
        "embedding_provider": "openai",
        "openai_api_key": "sk-bench-000000000000",
        "embedding_api_base_url": base_url,
        "redis_url": "none",
        "database_url": url,
        "clipembed_home": home,
    }
    values.update(over)
    return settings.Settings(_env_file=None, **values)


async def searches(rt: runtime.Runtime, texts: list[str], clients: int) -> dict[str, Any]:
    svc = rt.require_service()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    outcome = {"answered": 0, "unavailable": 0, "degraded": 0}
    params = core.Params(mode="semantic", limit=10)

    async def client() -> None:
        while not queue.empty():
            text = queue.get_nowait()
            started = time.perf_counter()
            try:
                result = await clip_search.search_detailed(
                    rt.reader, svc, text, params=params, filters=clip_search.Filters()
                )
                outcome["answered"] += 1
                outcome["degraded"] += bool(result.degraded)
            except (clip_search.SemanticUnavailable, errors.QueryEmbeddingUnavailable):
                outcome["unavailable"] += 1
            latencies.append(time.perf_counter() - started)

    lane = svc.queries
    before = lane.requests if lane else 0
    await asyncio.gather(*(client() for _ in range(clients)))
    return {
        "searches": len(texts),
        "clients": clients,
        **outcome,
        "provider_requests": (lane.requests if lane else 0) - before,
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(pct(latencies, 0.95) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


async def main_async(latency_ms: float, batch: int) -> dict[str, Any]:
    fake = FakeOpenAI(latency_ms=latency_ms).start()
    try:
        with common.postgres() as admin, tempfile.TemporaryDirectory() as tmp:
            import psycopg
            from psycopg.conninfo import make_conninfo

            with psycopg.connect(admin, autocommit=True) as c:
                c.execute("CREATE DATABASE lane")
            url = make_conninfo(admin, dbname="lane")
            home = Path(tmp)
            conn = await connection.connect(url, autocommit=True)
            async with conn:
                await migrations.up(conn, dimensions=768)
            async with await connection.connect(url) as conn:
                await importer.import_file(conn, DATA / "clips.jsonl.gz")
            fast = cfg_for(url, home, fake.base_url, embedding_requests_per_minute=100_000)
            async with runtime.open_runtime(fast, search=True) as rt:
                await backfill.run(rt)  # vectors for semantic search, quickly

            out: dict[str, Any] = {"latency_ms": latency_ms, "backfill_batch": batch}
            default = cfg_for(url, home, fake.base_url)  # 500 requests/min, the default
            async with runtime.open_runtime(default, search=True) as rt:
                out["searches_alone"] = await searches(rt, query_texts(200), 64)

            async with runtime.open_runtime(default) as rt:
                # the same backfill without searches: what this machine gives it at this budget
                svc = rt.require_service()
                before = svc.stats.requests
                started = time.perf_counter()
                await backfill.run(rt, force=True, batch_size=batch)
                seconds = time.perf_counter() - started
                alone_share = (svc.stats.requests - before) / (seconds * 500 / 60)
                out["backfill_alone_default_budget"] = {
                    "requests": svc.stats.requests - before,
                    "seconds": round(seconds, 1),
                    "share_of_budget": round(alone_share, 3),
                }

            async with runtime.open_runtime(default, search=True) as rt:
                started = time.perf_counter()
                svc = rt.require_service()
                before = svc.stats.requests
                bulk = asyncio.create_task(backfill.run(rt, force=True, batch_size=batch))
                await asyncio.sleep(2.0)  # the backfill is at full pace
                window_start, window_before = time.perf_counter(), svc.stats.requests
                during = await searches(rt, query_texts(200, skip=200), 64)
                window = time.perf_counter() - window_start
                # the service's requests are the backfill's (the lane counts its own)
                window_bulk = svc.stats.requests - window_before
                summary = await bulk
                seconds = time.perf_counter() - started
                bulk_requests = svc.stats.requests - before
                ceiling = seconds * 500 / 60
                out["searches_during_backfill"] = {
                    **during,
                    "backfill_requests": bulk_requests,
                    "backfill_clips": summary.processed,
                    "backfill_seconds": round(seconds, 1),
                    "backfill_share_of_budget": round(bulk_requests / ceiling, 3),
                    "backfill_share_vs_alone": round(bulk_requests / ceiling / alone_share, 3),
                    # while the searches ran only (the whole run also counts the backfill's
                    # start and its last batches, when it cannot fill the budget)
                    "search_window_seconds": round(window, 2),
                    "backfill_share_in_search_window": round(window_bulk / (window * 500 / 60), 3),
                    "target_share": 0.85,
                }

            limited = cfg_for(url, home, fake.base_url, embedding_requests_per_minute=600)
            async with runtime.open_runtime(limited) as rt:
                svc = rt.require_service()
                before = svc.stats.requests
                started = time.perf_counter()
                summary = await backfill.run(rt, force=True, batch_size=10, concurrency=4)
                seconds = time.perf_counter() - started
                requests = svc.stats.requests - before
                out["backfill_alone"] = {
                    "rpm": 600,
                    "requests": requests,
                    "seconds": round(seconds, 1),
                    "share_of_ceiling": round(requests / (seconds * 600 / 60), 3),
                    "target": 0.97,
                    "clips": summary.processed,
                }
            return out
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--batch", type=int, default=10, help="clips per backfill request")
    args = parser.parse_args()
    result = asyncio.run(main_async(args.latency_ms, args.batch))
    common.save(
        "query_priority",
        {
            "command": f"python -m bench.query_priority --latency-ms {args.latency_ms} "
            f"--batch {args.batch}",
            **result,
        },
    )


if __name__ == "__main__":
    main()
