"""The Batch API backfill's client side at 100,000 clips: plan, build files, parse, apply.

Against the fake provider in-process (its Files and Batch APIs; ``batch_mode=instant``), with a
private PostgreSQL: 100,000 real-looking clips (the stream titles file, repeated with a suffix),
``backfill --via batch`` end to end. Reported: clips/s for the whole client side (everything
but the provider's own work, which the fake does instantly), the cost against the sync price,
and the synchronous requests used (target: 0). Target: >= 5,000 clips/s.

    python -m bench.batch_client [--clips 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import common
from clipembed import runtime, settings
from clipembed.batches.runner import BatchBackfill
from clipembed.db import connection, migrations
from clipembed.testing.fakeopenai import FakeOpenAI

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch" / "stream_titles.jsonl.gz"
DIMS = 256  # the client's work per vector grows with it; 256 keeps the fake's share small


def titles() -> list[dict[str, Any]]:
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def load(url: str, count: int) -> float:
    rows = titles()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # a bulk load: no row triggers
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,"
                " broadcaster_name, game_name, language, created_at) FROM STDIN"
            ) as copy,
        ):
            for i in range(count):
                r = rows[i % len(rows)]
                title = (r.get("title") or "untitled").replace("\n", " ")[:200] + f" #{i}"
                copy.write_row(
                    (
                        f"s{i}",
                        f"https://clips.twitch.tv/s{i}",
                        f"https://clips.twitch.tv/embed?clip=s{i}",
                        title,
                        r["broadcaster_name"],
                        r["broadcaster_name"],
                        r.get("game_name"),
                        r.get("language"),
                        r["started_at"],
                    )
                )
    return time.perf_counter() - started


async def run(url: str, home: Path, fake: FakeOpenAI) -> dict[str, Any]:
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="openai",
        openai_api_key="sk-bench-batch",
        embedding_api_base_url=fake.base_url,
        embedding_dimensions=DIMS,
        embedding_batch_queue_tokens=100_000_000,
        embedding_batch_poll_seconds=0.01,
        redis_url="none",
        database_url=url,
        clipembed_home=home,
    )
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        await migrations.up(conn, dimensions=DIMS)
    return {"settings": cfg}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    args = parser.parse_args()
    with common.postgres() as url, tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        cfg = asyncio.run(run(url, Path(tmp), fake))["settings"]
        load_seconds = load(url, args.clips)
        before = fake.stats()

        async def backfill() -> Any:
            async with runtime.open_runtime(cfg) as rt:
                return await BatchBackfill(rt).run()

        started = time.perf_counter()
        summary = asyncio.run(backfill())
        seconds = time.perf_counter() - started
        after = fake.stats()
        with psycopg.connect(url) as conn:
            missing = conn.execute("SELECT count(*) FROM clips WHERE embedding IS NULL").fetchone()
    result = {
        "clips": args.clips,
        "dimensions": DIMS,
        "load_seconds": round(load_seconds, 1),
        "batch_backfill_seconds": round(seconds, 1),
        "clips_per_second": round(summary.applied / seconds, 1),
        "index_rebuild_seconds": summary.index_rebuild_seconds,
        "clips_per_second_without_index_builds": round(
            summary.applied / max(0.001, seconds - summary.index_rebuild_seconds), 1
        ),
        "target_clips_per_second": 5000,
        "applied": summary.applied,
        "missing_after": missing[0] if missing else None,
        "batches": summary.batches_submitted,
        "tokens": summary.embedding.tokens,
        "cost_usd": round(summary.cost_usd, 6),
        "sync_cost_usd": round(summary.sync_cost_usd, 6),
        "cost_ratio": round(summary.cost_usd / summary.sync_cost_usd, 3)
        if summary.sync_cost_usd
        else None,
        "sync_requests_used": after["requests"] - before["requests"],
        "note": "includes the fake provider's own work (embedding 100k texts in-process)",
    }
    common.save("batch_client", result)


if __name__ == "__main__":
    main()
