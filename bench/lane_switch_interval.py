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
from pathlib import Path
from typing import Any

from bench import common, query_lane
from clipembed import runtime
from clipembed.bulk import backfill

QUERIES = 640
CLIENTS = 64


async def run(url: str, home: Path, trials: int, intervals: list[float]) -> dict[str, Any]:
    cfg = query_lane.local_settings(url, home)
    await query_lane.load_real_clips(url)
    # distinct texts for every measurement: none may be in the lane's cache
    texts = query_lane.query_texts(QUERIES * trials * len(intervals))
    runs: list[dict[str, Any]] = []
    async with runtime.open_runtime(cfg, search=True) as rt:
        await backfill.run(rt)  # loads the model, which sets its own interval: set ours after
        for t in range(trials):
            for i, interval in enumerate(intervals):
                sys.setswitchinterval(interval)
                k = t * len(intervals) + i
                one = await query_lane.measure(rt, texts[k * QUERIES : (k + 1) * QUERIES], CLIENTS)
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
