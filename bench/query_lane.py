"""The query lane under load: coalesced local encodes, and search with a hanging provider.

1. **Local model, 64 concurrent clients, uncached queries**: semantic search throughput
   (queries/s, each a full search against 3,504 real clips) against the batched encode rate of
   the same texts (64 per ``encode``). Target: >= 0.7.
2. **Provider hanging** (every request takes 30 s): hybrid search latency from a client's side,
   ``SEARCH_EMBED_TIMEOUT_MS=1000``. Target: p95 <= 1.5 s, every answer 200 and degraded.

    python -m bench.query_lane [--queries 640] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import common
from clipembed import runtime, settings
from clipembed.bulk import backfill, importer
from clipembed.db import connection, migrations
from clipembed.search import clips as clip_search
from clipembed.search import core

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch"


def query_texts(count: int) -> list[str]:
    """Distinct real stream titles (never clip titles: nothing is cached)."""
    seen: dict[str, None] = {}
    with gzip.open(DATA / "stream_titles.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            title = (json.loads(line).get("title") or "").strip()
            if 3 <= len(title) <= 200:
                seen.setdefault(title, None)
            if len(seen) >= count:
                break
    return list(seen)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def local_settings(url: str, home: Path) -> settings.Settings:
    """The bundled model, no Redis, a deadline that never cuts (throughput, not latency)."""
    return settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=home,
        search_coalesce_ms=3,
        search_embed_timeout_ms=60_000,
    )


async def load_real_clips(url: str) -> None:
    """The schema at the bundled model's 384 dimensions and the 3,504 real clips."""
    async with await connection.connect(url, autocommit=True) as conn:
        await migrations.up(conn, dimensions=384)
    async with await connection.connect(url) as conn:
        await importer.import_file(conn, DATA / "clips.jsonl.gz")


async def measure(rt: runtime.Runtime, texts: list[str], clients: int) -> dict[str, Any]:
    """The batched encode rate of ``texts`` (64 per encode), then ``clients`` concurrent
    semantic searches of the same texts: rates, latencies, the lane's encodes, and the CPU per
    search of the event loop, this process's other threads and PostgreSQL."""
    svc = rt.require_service()
    t = time.perf_counter()
    for start in range(0, len(texts), 64):
        await svc.provider.embed(texts[start : start + 64])
    encode_rate = len(texts) / (time.perf_counter() - t)

    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    latencies: list[float] = []
    params = core.Params(mode="semantic", limit=10)

    async def client() -> None:
        while not queue.empty():
            text = queue.get_nowait()
            started = time.perf_counter()
            await clip_search.search_detailed(
                rt.reader, svc, text, params=params, filters=clip_search.Filters()
            )
            latencies.append(time.perf_counter() - started)

    requests_before = svc.queries.requests if svc.queries else 0
    pg, threads, loop = postgres_cpu(), threads_cpu(), time.thread_time()
    t = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    search_rate = len(texts) / (time.perf_counter() - t)
    loop = time.thread_time() - loop
    threads = threads_cpu() - threads - loop
    pg = postgres_cpu() - pg
    n = len(texts)
    return {
        "batched_encode_texts_per_s": round(encode_rate, 1),
        "semantic_searches_per_s": round(search_rate, 1),
        "ratio": round(search_rate / encode_rate, 3),
        "encodes_sent_by_the_query_lane": (svc.queries.requests if svc.queries else 0)
        - requests_before,
        "search_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "search_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "event_loop_cpu_ms_per_search": round(loop / n * 1000, 2),
        "other_threads_cpu_ms_per_search": round(threads / n * 1000, 2),
        "postgres_cpu_ms_per_search": round(pg / n * 1000, 2),
    }


def postgres_cpu() -> float:
    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "postgres" in " ".join(proc.info["cmdline"] or []):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def threads_cpu() -> float:
    return sum(t.user_time + t.system_time for t in psutil.Process().threads())


async def local_throughput(url: str, home: Path, texts: list[str], clients: int) -> dict[str, Any]:
    await load_real_clips(url)
    async with runtime.open_runtime(local_settings(url, home), search=True) as rt:
        await backfill.run(rt)
        await rt.require_service().provider.embed(["warm up the model"])
        measured = await measure(rt, texts, clients)
    return {"queries": len(texts), "clients": clients, "target_ratio": 0.7, **measured}


def hanging_provider(url: str, home: Path, queries: int) -> dict[str, Any]:
    """Hybrid search over HTTP (`clipembed serve`) while every provider request hangs 30 s."""
    import os

    with common.fake_provider("--slow-seconds", "30") as base_url:
        env = dict(
            os.environ,
            DATABASE_URL=url,
            EMBEDDING_PROVIDER="openai",
            OPENAI_API_KEY="sk-bench",
            EMBEDDING_API_BASE_URL=base_url,
            EMBEDDING_DIMENSIONS="384",
            REDIS_URL="none",
            CLIPEMBED_HOME=str(home),
            SEARCH_EMBED_TIMEOUT_MS="1000",
            # one load generator is one client address: the per-client search limits are off
            CLIPEMBED_SEARCH_REQUESTS_PER_SECOND="0",
            CLIPEMBED_SEARCH_EMBEDS_PER_MINUTE="0",
        )
        with common.serving(env, timeout=60) as http:
            httpx.post(f"{base_url.rsplit('/v1', 1)[0]}/_control", json={"plan": ["slow"] * 10_000})
            latencies, statuses, degraded = [], [], 0
            with httpx.Client(base_url=http, timeout=60) as client:
                for i in range(queries):
                    started = time.perf_counter()
                    r = client.get("/search", params={"q": f"insane clutch {i}"})
                    latencies.append(time.perf_counter() - started)
                    statuses.append(r.status_code)
                    degraded += r.status_code == 200 and r.json()["degraded"] == ["semantic"]
    return {
        "queries": queries,
        "status_200": statuses.count(200),
        "degraded": degraded,
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "target_p95_ms": 1500,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=640)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--hanging-queries", type=int, default=40)
    args = parser.parse_args()
    texts = query_texts(args.queries)
    with common.postgres() as url, tempfile.TemporaryDirectory() as tmp:
        local = asyncio.run(local_throughput(url, Path(tmp), texts, args.clients))
        print(json.dumps(local), flush=True)
        hanging = hanging_provider(url, Path(tmp), args.hanging_queries)
    common.save("query_lane", {"local_model": local, "provider_hanging": hanging})


if __name__ == "__main__":
    main()
