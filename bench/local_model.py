"""The local model: backfill throughput as a fraction of plain ``SentenceTransformer.encode``.

Same texts, same process, same loaded model; the backfill includes reading from and writing
to PostgreSQL and the HNSW index. Target >= 0.9.

    python -m bench.local_model [--clips 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import psycopg

from bench import common
from clipembed import clips, demo_data, runtime, settings
from clipembed.bulk import backfill, importer
from clipembed.db import migrations


async def run(url: str, count: int, tmp: Path) -> dict:
    path = tmp / "clips.jsonl.gz"
    generated = list(demo_data.generate(count, seed=5))
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for c in generated:
            fh.write(json.dumps(c, ensure_ascii=False) + "\n")
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        await migrations.up(conn, dimensions=384)
    conn = await psycopg.AsyncConnection.connect(url)
    async with conn:
        await importer.import_file(conn, path)
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp,
    )
    texts = [clips.embedding_text(clips.ClipText.from_row(c)) for c in generated]
    async with runtime.open_runtime(cfg) as rt:
        svc = rt.require_service()
        model = svc.provider._load()
        model.encode(texts[:128])  # warm up
        t = time.perf_counter()
        summary = await backfill.run(rt, batch_size=100, concurrency=2)
        ours = time.perf_counter() - t
        t = time.perf_counter()
        model.encode(texts, normalize_embeddings=True)  # plain: the library defaults
        plain = time.perf_counter() - t
    return {
        "clips": count,
        "backfill_seconds": round(ours, 2),
        "backfill_clips_per_second": round(summary.processed / ours, 1),
        "plain_encode_seconds": round(plain, 2),
        "plain_encode_texts_per_second": round(count / plain, 1),
        "fraction_of_plain_encode": round(plain / ours, 3),
        "processed": summary.processed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=3000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with common.postgres() as url, tempfile.TemporaryDirectory() as tmp:
        common.save("local_model", asyncio.run(run(url, args.clips, Path(tmp))))


if __name__ == "__main__":
    main()
