"""Backfill defaults against their ceiling, and the time until every clip is searchable.

20,000 generated clips, the fake provider (its own process, 50 ms per request), the default
model (text-embedding-3-small, 1,536 dimensions, halfvec) and every backfill default (batch 50,
concurrency 4, 500 requests/min: a ceiling of 500 / 60 x 50 = 417 clips/s). Each run gets a
fresh database with the clips imported and the space's HNSW index in place (as on a platform
that adds clipembed to its existing clips), then ``clipembed backfill`` with:

- ``--index keep``: the graph maintained row by row;
- ``--index auto`` (the default): the index policy decides (it probes the first batches);
- ``--index rebuild``: dropped and built once at the end;

and the same three without a request limit (``--unlimited``: the database is then the bound).
Reported: clips/s of the embedding phase against the ceiling, the index build, and the time
to searchable (the whole command: every clip embedded and the index in place).

    python -m bench.backfill_defaults [--clips 20000] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import common
from bench.backfill import make_file
from bench.backfill_index import database

KEY = "sk-bench-000000000000000000"
DEFAULT_RPM = 500
DEFAULT_BATCH = 50


def one(admin: str, base: str, tmp: Path, data: Path, mode: str, limited: bool) -> dict[str, Any]:
    name = f"bench_{mode}_{'limited' if limited else 'unlimited'}"
    url = database(admin, name)
    values = {
        "DATABASE_URL": url,
        "EMBEDDING_PROVIDER": "openai",
        "OPENAI_API_KEY": KEY,
        "EMBEDDING_API_BASE_URL": base,
        "REDIS_URL": "none",
        "CLIPEMBED_HOME": str(tmp / name),
        "CLIPEMBED_LOG_LEVEL": "WARNING",
    }
    if not limited:
        values |= {
            "EMBEDDING_REQUESTS_PER_MINUTE": "1000000",
            "EMBEDDING_TOKENS_PER_MINUTE": "1000000000",
        }
    e = common.env(**values)
    for step in (("migrate", "up"), ("import", str(data))):
        done, _, _ = common.clipembed(*step, env_vars=e)
        if done.returncode:
            raise RuntimeError(f"{step[0]} failed: {done.stderr[-2000:]}")
    done, seconds, peak = common.clipembed("backfill", "--index", mode, "--json", env_vars=e)
    if not done.stdout.strip():
        raise RuntimeError(f"backfill printed nothing: {done.stderr[-2000:]}")
    s = json.loads(done.stdout.strip().splitlines()[-1])
    embedding = max(s["duration"] - s["index_seconds"], 1e-9)
    out = {
        "index": mode,
        "limited": limited,
        "processed": s["processed"],
        "failed": s["failed"],
        "embedding_clips_per_s": round(s["processed"] / embedding, 1),
        "index_rebuilt": s["index_rebuilt"],
        "index_build_s": s["index_seconds"],
        "index_policy": s["index_policy"],
        "time_to_searchable_s": round(s["duration"], 1),
        "command_s": round(seconds, 1),
        "peak_rss_mib": peak,
    }
    if limited:
        ceiling = DEFAULT_RPM / 60 * DEFAULT_BATCH
        out["ceiling_clips_per_s"] = round(ceiling, 1)
        out["share_of_ceiling"] = round(out["embedding_clips_per_s"] / ceiling, 3)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--modes", default="keep,auto,rebuild")
    parser.add_argument("--no-unlimited", action="store_true")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = make_file(tmp, args.clips, seed=5)
        latency = ("--latency-ms", str(args.latency_ms))
        with common.postgres() as admin, common.fake_provider(*latency) as base:
            for limited in (True, False) if not args.no_unlimited else (True,):
                for mode in args.modes.split(","):
                    runs.append(one(admin, base, tmp, data, mode, limited))
    common.save(
        "backfill_defaults",
        {
            "clips": args.clips,
            "provider_latency_ms": args.latency_ms,
            "command": "python -m bench.backfill_defaults "
            f"--clips {args.clips} --latency-ms {args.latency_ms}",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
