"""The query lane's local-model throughput at two thread switch intervals, alternating.

The bundled model encodes in a worker thread that runs Python between its torch calls; the
event loop serving the searches waits for the GIL at each hand-over, up to the interpreter's
switch interval (5 ms by default). ``LocalProvider`` sets it to
``local.SWITCH_INTERVAL_S`` once the model loads; this benchmark measures why, on one database
and one loaded model: for each trial and each interval, 640 unique real stream titles are
encoded in batches of 64 (the reference rate), then searched (semantic, 64 clients), and the
CPU per search of the event loop, the other threads and PostgreSQL is recorded.

    python -m bench.lane_switch_interval [--trials 3] [--intervals 0.005,0.0005]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import common, query_lane
from clipembed import runtime
from clipembed.bulk import backfill, importer
from clipembed.db import connection, migrations
from clipembed.search import clips as clip_search
from clipembed.search import core

QUERIES = 640
CLIENTS = 64


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


async def trial(rt: runtime.Runtime, texts: list[str]) -> dict[str, Any]:
    svc = rt.require_service()
    started = time.perf_counter()
    for i in range(0, len(texts), 64):
        await svc.provider.embed(texts[i : i + 64])
    encode_rate = len(texts) / (time.perf_counter() - started)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    params = core.Params(mode="semantic", limit=10)

    async def client() -> None:
        while not queue.empty():
            text = queue.get_nowait()
            await clip_search.search_detailed(
                rt.reader, svc, text, params=params, filters=clip_search.Filters()
            )

    pg, threads, loop = postgres_cpu(), threads_cpu(), time.thread_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    wall = time.perf_counter() - started
    loop = time.thread_time() - loop
    threads = threads_cpu() - threads - loop
    pg = postgres_cpu() - pg
    n = len(texts)
    return {
        "batched_encode_texts_per_s": round(encode_rate, 1),
        "semantic_searches_per_s": round(n / wall, 1),
        "ratio": round(n / wall / encode_rate, 3),
        "event_loop_cpu_ms_per_search": round(loop / n * 1000, 2),
        "other_threads_cpu_ms_per_search": round(threads / n * 1000, 2),
        "postgres_cpu_ms_per_search": round(pg / n * 1000, 2),
    }


async def run(url: str, home: Path, trials: int, intervals: list[float]) -> dict[str, Any]:
    cfg = query_lane.local_settings(url, home)
    async with await connection.connect(url, autocommit=True) as conn:
        await migrations.up(conn, dimensions=384)
    async with await connection.connect(url) as conn:
        await importer.import_file(conn, query_lane.DATA / "clips.jsonl.gz")
    # distinct texts for every measurement: none may be in the lane's cache
    texts = query_lane.query_texts(QUERIES * trials * len(intervals))
    runs: list[dict[str, Any]] = []
    async with runtime.open_runtime(cfg, search=True) as rt:
        await backfill.run(rt)  # loads the model, which sets its own interval: set ours after
        for t in range(trials):
            for i, interval in enumerate(intervals):
                sys.setswitchinterval(interval)
                k = t * len(intervals) + i
                one = await trial(rt, texts[k * QUERIES : (k + 1) * QUERIES])
                runs.append({"switch_interval_s": interval, **one})
                print(runs[-1], flush=True)
    summary = {
        str(interval): {
            "ratios": [r["ratio"] for r in runs if r["switch_interval_s"] == interval],
            "mean_ratio": round(
                statistics.fmean(r["ratio"] for r in runs if r["switch_interval_s"] == interval),
                3,
            ),
        }
        for interval in intervals
    }
    return {"runs": runs, "by_interval": summary}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--intervals", default="0.005,0.0005")
    args = parser.parse_args()
    intervals = [float(x) for x in args.intervals.split(",") if x.strip()]
    with common.postgres() as url, tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(url, Path(tmp), args.trials, intervals))
    common.save(
        "lane_switch_interval",
        {
            "command": "python -m bench.lane_switch_interval "
            f"--trials {args.trials} --intervals {args.intervals}",
            **result,
        },
    )


if __name__ == "__main__":
    main()
