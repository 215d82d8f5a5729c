"""``GET /status`` at a million clips: the status model must not count rows. Target p95 <= 100 ms.

Loads N clips (default 1,000,000; 90 % embedded with a placeholder vector of 8 dims, 1 %
removed), 20,000 queue items (some retrying, some leased), 2,000 dead letters, 35 days of
per-minute rollups from three sources and queue samples, and 8 workers; then times
``status.model.collect`` (the function behind /status, the CLI and the pages) in-process, and
``GET /status`` over HTTP through ``clipembed serve``.

The bulk load runs with the row triggers off (``session_replication_role = replica``, as a
bulk loader would), then recomputes the counters the way migration 0007 does; the HNSW index is
dropped for the load (its graph is not what /status reads; only its size is).

    python -m bench.status [--clips 1000000] [--runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import common
from clipembed import runtime, settings
from clipembed.admin import auth
from clipembed.db import connection, migrations
from clipembed.status import model as status_model

DIMS = 8

LOAD = """
INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
    broadcaster_name, game_name, language, created_at, is_removed, embedding, embedding_model,
    embedding_generated_at)
SELECT 'c' || g, 'https://clips.twitch.tv/c' || g, 'https://clips.twitch.tv/embed?clip=c' || g,
       'clip number ' || g, 'creator' || (mod(g, 5000)), 'streamer' || (mod(g, 2000)), 'game' || (mod(g, 300)),
       'en', now() - make_interval(mins => mod(g, 100000)), mod(g, 100) = 0,
       CASE WHEN mod(g, 10) <> 0 THEN '[1,0,0,0,0,0,0,1]'::vector END,
       CASE WHEN mod(g, 10) <> 0 THEN %(model)s END,
       CASE WHEN mod(g, 10) <> 0 THEN now() END
FROM generate_series(%(start)s, %(stop)s) g
"""

RECOUNT = """
TRUNCATE clipembed_counters;
INSERT INTO clipembed_counters (slot, model, live, removed, embedded)
SELECT 0, '', count(*) FILTER (WHERE NOT is_removed), count(*) FILTER (WHERE is_removed), 0
FROM clips;
INSERT INTO clipembed_counters (slot, model, live, removed, embedded)
SELECT 0, embedding_model, 0, 0, count(*)
FROM clips WHERE embedding IS NOT NULL AND NOT is_removed AND embedding_model IS NOT NULL
GROUP BY embedding_model;
"""

QUEUE = """
INSERT INTO embedding_queue (clip_id, attempts, last_error, leased_until, leased_by, enqueued_at)
SELECT id,
       CASE WHEN n % 10 = 0 THEN 3 ELSE 0 END,
       CASE WHEN n % 10 = 0 THEN 'RetryableProviderError: 500' END,
       CASE WHEN n % 7 = 0 THEN now() + interval '1 minute' END,
       CASE WHEN n % 7 = 0 THEN 'w1' END,
       now() - make_interval(secs => n)
FROM (SELECT id, row_number() OVER () AS n FROM clips WHERE embedding IS NULL LIMIT 20000) t
"""
DEAD = """
INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at)
SELECT id, 5, 'PermanentProviderError: 400 bad input', now() - interval '1 day'
FROM clips WHERE embedding IS NULL AND NOT is_removed
  AND id NOT IN (SELECT clip_id FROM embedding_queue) LIMIT 2000
"""
ROLLUPS = """
INSERT INTO clipembed_rollups (minute, model, source, clips, failed, requests, rate_limited,
    tokens, cache_hits, cache_misses, cost_usd)
SELECT date_trunc('minute', now()) - make_interval(mins => m), %(model)s, s,
       100, mod(m, 3), 2, (mod(m, 50) = 0)::int, 2500, 10, 90, 0.00005
FROM generate_series(0, 35 * 1440) m, unnest(ARRAY['backfill', 'worker', 'scheduler']) s
"""
SAMPLES = """
INSERT INTO clipembed_queue_samples (minute, pending, oldest_seconds, dead_letters)
SELECT date_trunc('minute', now()) - make_interval(mins => m), 100 + mod(m, 50), 2.5, 2000
FROM generate_series(0, 35 * 1440) m
"""
WORKERS = """
INSERT INTO clipembed_workers (name, host, pid, version, started_at, heartbeat_at,
    lease_seconds, in_flight, embedded, failed)
SELECT 'w' || g, 'host' || g, 1000 + g, '0.1.0', now() - interval '1 hour', now(), 60, 10, 5000, 3
FROM generate_series(1, 8) g
"""


def load(url: str, clips: int, model: str) -> dict[str, Any]:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # a bulk loader: no row triggers
        # the HNSW graph of 900,000 placeholder vectors is not what is measured here
        conn.execute("DROP INDEX IF EXISTS idx_clips_embedding_hnsw")
        step = 100_000
        for start in range(1, clips + 1, step):
            conn.execute(
                LOAD, {"start": start, "stop": min(start + step - 1, clips), "model": model}
            )
        conn.execute("SET session_replication_role = origin")
        conn.execute(RECOUNT)
        for statement in (QUEUE, DEAD, SAMPLES, WORKERS):
            conn.execute(statement)
        conn.execute(ROLLUPS, {"model": model})
        conn.execute("VACUUM ANALYZE")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM clips), (SELECT count(*) FROM embedding_queue),"
            " (SELECT count(*) FROM embedding_dead_letters), (SELECT count(*) FROM clipembed_rollups)"
        ).fetchone()
    assert counts is not None
    return {
        "clips": counts[0],
        "queue": counts[1],
        "dead_letters": counts[2],
        "rollup_rows": counts[3],
        "load_seconds": round(time.perf_counter() - started, 1),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def in_process(cfg: settings.Settings, runs: int) -> dict[str, Any]:
    async with runtime.open_runtime(cfg, with_service=False) as rt:
        for _ in range(3):  # warm the pool and the caches
            await status_model.collect(rt.pool, cfg, dimensions=rt.dimensions)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            data = await status_model.collect(rt.pool, cfg, dimensions=rt.dimensions)
            times.append((time.perf_counter() - t) * 1000)
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "coverage": data["coverage"],
        "backlog": data["backlog"],
    }


def over_http(url: str, home: Path, runs: int) -> dict[str, Any]:
    token = auth.TOKEN_PREFIX + "bench-" + os.urandom(16).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO clipembed_admin_tokens (name, token_hash) VALUES ('bench', %s)",
            (auth.digest(token),),
        )
    env = dict(
        os.environ,
        DATABASE_URL=url,
        EMBEDDING_PROVIDER="openai",  # never called: /status reads the database only
        OPENAI_API_KEY="sk-bench-unused",
        EMBEDDING_DIMENSIONS=str(DIMS),
        REDIS_URL="none",
        CLIPEMBED_HOME=str(home),
    )
    times = []
    with (
        common.serving(env) as http,
        httpx.Client(
            base_url=http, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client,
    ):
        for _ in range(3):
            assert client.get("/status").status_code == 200
        for _ in range(runs):
            t = time.perf_counter()
            r = client.get("/status")
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "target_p95_ms": 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with common.postgres() as url, tempfile.TemporaryDirectory() as tmp:
        cfg = settings.Settings(
            _env_file=None,
            embedding_provider="openai",
            openai_api_key="sk-bench-unused",
            embedding_dimensions=DIMS,
            redis_url="none",
            database_url=url,
            clipembed_home=Path(tmp),
        )

        async def migrate() -> None:
            conn = await connection.connect(url, autocommit=True)
            async with conn:
                await migrations.up(conn, dimensions=DIMS)

        asyncio.run(migrate())
        loaded = load(url, args.clips, cfg.model)
        print(loaded, flush=True)
        collect = asyncio.run(in_process(cfg, args.runs))
        print(collect, flush=True)
        http = over_http(url, Path(tmp), args.runs)
    common.save("status", {"data": loaded, "collect": collect, "http": http})


if __name__ == "__main__":
    main()
