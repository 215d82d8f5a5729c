"""Real-time latency: from an INSERT's commit to its embedding stored, at 20 inserts/s.

Two ``clipembed worker`` processes, the fake provider with 50 ms latency in its own process.
Latency = ``embedding_generated_at`` (set in the worker's completing transaction) minus the
client's clock right after COMMIT (same machine, same clock). Target: p95 <= 2 s.

    python -m bench.worker_latency [--rate 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import statistics
import subprocess
import sys
import time
import uuid

import psycopg

from bench import common
from clipembed.db import migrations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import asyncio

    with common.postgres() as url, common.fake_provider("--latency-ms", "50") as base:

        async def migrate() -> None:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            async with conn:
                await migrations.up(conn, dimensions=768)

        asyncio.run(migrate())
        e = common.env(
            DATABASE_URL=url,
            EMBEDDING_PROVIDER="openai",
            OPENAI_API_KEY="sk-bench-00000000000",
            EMBEDDING_API_BASE_URL=base,
            REDIS_URL="none",
            EMBEDDING_REQUESTS_PER_MINUTE="100000",
            CLIPEMBED_LOG_LEVEL="WARNING",
            CLIPEMBED_HOME="/tmp",
        )
        workers = [
            subprocess.Popen([sys.executable, "-m", "clipembed", "worker"], env=e)
            for _ in range(args.workers)
        ]
        time.sleep(3)
        committed: dict[str, float] = {}
        with psycopg.connect(url, autocommit=True) as conn:
            interval = 1 / args.rate
            start = time.time()
            n = int(args.rate * args.seconds)
            for i in range(n):
                target = start + i * interval
                time.sleep(max(0.0, target - time.time()))
                tid = f"lat-{uuid.uuid4().hex}"
                conn.execute(
                    "INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name, "
                    "broadcaster_name, game_name, created_at) VALUES (%s, 'u', 'e', %s, 'c', 'b', 'g', now())",
                    (tid, f"latency clip {i}"),
                )
                committed[tid] = time.time()
            deadline = time.time() + 30
            while time.time() < deadline:
                left = conn.execute(
                    "SELECT count(*) FROM clips WHERE embedding IS NULL"
                ).fetchone()[0]
                if left == 0:
                    break
                time.sleep(0.2)
            rows = conn.execute(
                "SELECT twitch_clip_id, embedding_generated_at FROM clips"
            ).fetchall()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    lat = sorted((at.timestamp() - committed[tid]) * 1000 for tid, at in rows if at is not None)
    missing = sum(1 for _, at in rows if at is None)
    common.save(
        "worker_latency",
        {
            "inserts": len(committed),
            "rate_per_second": args.rate,
            "workers": args.workers,
            "provider_latency_ms": 50,
            "embedded": len(lat),
            "not_embedded": missing,
            "p50_ms": round(statistics.median(lat), 1),
            "p95_ms": round(lat[int(0.95 * len(lat)) - 1], 1),
            "max_ms": round(lat[-1], 1),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(),
        },
    )


if __name__ == "__main__":
    main()
