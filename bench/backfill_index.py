"""HNSW during or after loading: the same bulk backfill with the index kept vs dropped and rebuilt.

Each mode gets its own fresh database on one PostgreSQL, the same generated clips, and the fake
provider in its own process (50 ms per request, no limit), so only the index strategy differs.
The rebuild's time is inside the measured backfill (``--index rebuild`` builds it before exiting).

    python -m bench.backfill_index [--clips 50000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from bench import backfill as backfill_bench
from bench import common


def database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin_url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def run(clips: int) -> dict[str, Any]:
    out: dict[str, Any] = {"clips": clips, "provider_latency_ms": 50}
    with tempfile.TemporaryDirectory() as tmp:
        data = backfill_bench.make_file(Path(tmp), clips, seed=3)
        with common.postgres() as admin, common.fake_provider("--latency-ms", "50") as base:
            for mode in ("keep", "rebuild"):
                url = database(admin, f"bench_{mode}")
                e = common.fake_provider_env(url, base, tmp, EMBEDDING_MAX_CONCURRENCY="8")
                for step in (("migrate", "up"), ("import", str(data))):
                    done, _, _ = common.clipembed(*step, env_vars=e)
                    if done.returncode:
                        raise RuntimeError(f"{step[0]} failed: {done.stderr[-2000:]}")
                result, seconds, _ = common.clipembed(
                    "backfill",
                    "--batch",
                    "100",
                    "--concurrency",
                    "8",
                    "--index",
                    mode,
                    "--json",
                    env_vars=e,
                )
                if not result.stdout.strip():
                    raise RuntimeError(f"backfill printed nothing: {result.stderr[-2000:]}")
                summary = json.loads(result.stdout.strip().splitlines()[-1])
                out[mode] = {
                    "seconds_end_to_end": round(seconds, 1),
                    "clips_per_second": round(summary["processed"] / seconds, 1),
                    "processed": summary["processed"],
                    "failed": summary["failed"],
                    "index_rebuilt": summary["index_rebuilt"],
                }
    out["rebuild_speedup"] = round(
        out["keep"]["seconds_end_to_end"] / out["rebuild"]["seconds_end_to_end"], 2
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=50_000)
    args = parser.parse_args()
    common.save("backfill_index", run(args.clips))


if __name__ == "__main__":
    main()
