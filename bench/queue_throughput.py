"""How many workers one PostgreSQL queue serves: claims and completions per second, 1-8 workers.

N generated clips are imported (every one queued), then for each worker count W, W processes
each run the queue's own statements in a loop for ``--seconds``: claim a batch (SKIP LOCKED,
lease), complete it with one fixed 768-dimension vector per clip written into the space's table
(with its HNSW index, as in production), retire the items. No provider: what is measured is the
database side of the queue, the part that does not scale out with workers. Between runs the
clips are queued again.

    python -m bench.queue_throughput [--clips 100000] [--workers 1,2,4,8] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench import common
from bench.bulk_import import make_file
from clipembed import spaces
from clipembed.realtime import queue

DIMS = 768
REQUEUE = "INSERT INTO embedding_queue (clip_id) SELECT id FROM clips ON CONFLICT DO NOTHING"


async def work(url: str, name: str, batch: int, seconds: float) -> tuple[int, int]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        from pgvector.psycopg import register_vector_async

        await register_vector_async(conn)
        space = await spaces.active(conn)
        target = queue.SpaceTarget(space.id, space.table_name, space.storage, space.dimensions)
        vector = np.full(DIMS, 1 / np.sqrt(DIMS), dtype=np.float32)
        claims = done = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = await queue.claim(conn, worker=name, limit=batch, lease=60, max_claims=5)
            if not got.items:
                break
            claims += 1
            writes = [queue.SpaceWrite(i, space.id, vector, b"bench", "bench") for i in got.items]
            done += len(
                await queue.complete(conn, writes, got.items, worker=name, targets=[target])
            )
    return claims, done


def process(url: str, name: str, batch: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(work(url, name, batch, seconds)))


def run(url: str, workers: int, batch: int, seconds: float) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(REQUEUE)
        conn.execute("VACUUM ANALYZE embedding_queue")
    results: Any = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=process, args=(url, f"w{i}", batch, seconds, results))
        for i in range(workers)
    ]
    load = os.getloadavg()[0]
    started = time.monotonic()
    for p in procs:
        p.start()
    totals = [results.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    claims, done = sum(t[0] for t in totals), sum(t[1] for t in totals)
    return {
        "workers": workers,
        "batch": batch,
        "seconds": round(elapsed, 1),
        "claims_per_s": round(claims / elapsed, 1),
        "clips_per_s": round(done / elapsed, 1),
        "load_average_before": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp_name, common.postgres() as url:
        tmp = Path(tmp_name)
        e = common.env(DATABASE_URL=url, CLIPEMBED_HOME=str(tmp / "home"),
                       EMBEDDING_DIMENSIONS=str(DIMS))  # fmt: skip
        common.clipembed("migrate", "up", env_vars=e)
        common.clipembed("import", str(make_file(tmp / "c.jsonl.gz", args.clips)), env_vars=e)
        for workers in (int(w) for w in args.workers.split(",")):
            runs.append(run(url, workers, args.batch, args.seconds))
            print(runs[-1], flush=True)
    common.save(
        "queue_throughput",
        {
            "clips": args.clips,
            "command": "python -m bench.queue_throughput "
            f"--clips {args.clips} --workers {args.workers} --batch {args.batch}",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
