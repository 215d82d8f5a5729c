"""Database statements and time per search, by mode, with the query embeddings cached.

The server logs every statement it receives (``log_statement = 'all'``) while N searches run
per mode through the product's ``search_detailed`` (the path of ``GET /search``); statements per
search are counted from that log (BEGIN and COMMIT included: each is a round trip unless sent in
a pipeline). Clips: the real Twitch clips when ../shared/data is there, else generated ones.

    python -m bench.search_round_trips [--clips 3504] [--searches 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import common
from clipembed import demo_data, runtime, settings
from clipembed.search import clips as clip_search
from clipembed.search import core

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch" / "clips.jsonl.gz"
QUERIES = ["clutch", "funny moment", "神プレイ", "레전드", "boss fight", "speedrun", "rage"]


def clips_file(tmp: Path, count: int) -> Path:
    if DATA.exists():
        return DATA
    path = tmp / "clips.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for clip in demo_data.generate(count, seed=3):
            fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
    return path


STATEMENT = re.compile(r"LOG:  (?:statement|execute [^:]*): (.{0,70})")


def logged_statements(log: Path) -> list[str]:
    """Statements in the server's log (the embedded server logs to ``<data>/log``)."""
    return STATEMENT.findall(log.read_text(errors="replace"))


async def measure(cfg: settings.Settings, log: Path, url: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with runtime.open_runtime(cfg, search=True) as rt:
        for mode in ("keyword", "semantic", "hybrid"):
            params = core.Params(mode=mode)  # type: ignore[arg-type]
            for q in QUERIES:  # warm: embeddings cached, connections open, plans cached
                await clip_search.search_detailed(
                    rt.reader, rt.service_for, q, params=params, filters=clip_search.Filters()
                )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET log_statement = 'all'")
                conn.execute("SELECT pg_reload_conf()")
            await asyncio.sleep(0.5)  # the reload reaches the pool's backends at their next query
            before = logged_statements(log)
            times = []
            for i in range(n):
                t = time.perf_counter()
                await clip_search.search_detailed(
                    rt.reader, rt.service_for, QUERIES[i % len(QUERIES)], params=params,
                    filters=clip_search.Filters(),
                )  # fmt: skip
                times.append((time.perf_counter() - t) * 1000)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET log_statement = 'none'")
                conn.execute("SELECT pg_reload_conf()")
            logged = logged_statements(log)[len(before) :]
            statements = len(logged) - 2  # minus this ALTER and reload
            out[mode] = {
                "searches": n,
                "statements_per_search": round(statements / n, 2),
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(sorted(times)[int(0.95 * (n - 1))], 2),
                "one_search": [
                    " ".join(x.split()) for x in logged[-round(statements / n) - 2 : -2]
                ],
            }
            print(mode, out[mode], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=3504)
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--name", default="search_round_trips")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, common.fake_provider() as base:
        tmp = Path(tmp_name)
        with common.postgres() as url:
            with psycopg.connect(url, autocommit=True) as conn:
                data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
            e = common.env(
                DATABASE_URL=url, CLIPEMBED_HOME=str(tmp / "home"), EMBEDDING_PROVIDER="openai",
                OPENAI_API_KEY="sk-bench-0000000000", EMBEDDING_API_BASE_URL=base,
                EMBEDDING_DIMENSIONS="768",
            )  # fmt: skip
            common.clipembed("migrate", "up", env_vars=e)
            common.clipembed("import", str(clips_file(tmp, args.clips)), env_vars=e)
            common.clipembed("backfill", env_vars=e)
            cfg = settings.load(
                database_url=url, embedding_provider="openai",
                openai_api_key="sk-bench-0000000000", embedding_api_base_url=base,
                embedding_dimensions=768, redis_url="embedded", clipembed_home=tmp / "home",
                clipembed_redis_prefix="bench-rt:",
            )  # fmt: skip
            log = Path(data_dir) / "log"
            result = asyncio.run(measure(cfg, log, url, args.searches))
    common.save(args.name, {"clips": args.clips, "real_data": DATA.exists(), **result})


if __name__ == "__main__":
    main()
