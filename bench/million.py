"""A million clips, end to end, for ``vector`` and ``halfvec`` storage at 768 dimensions.

Phases, against a private PostgreSQL and the fake provider (a process of its own, no latency,
no limit):

1. import of N generated clips: ``--import cli`` runs ``clipembed import`` (row triggers:
   search postings, queue; ~600 clips/s on 2 busy cores), ``--import bulk`` (default) loads them
   the way a bulk loader would: binary COPY with row triggers off, then the search vectors and
   postings rebuilt set-based with migration 0005's statements;
2. for each storage (``--storages halfvec,vector``): ``clipembed model add`` a space of that
   storage (same model and dimensions: the spaces hold the same vectors in two precisions) and
   ``clipembed model backfill`` it through the fake provider, the HNSW index dropped and built
   once at the end (the backfill's ``--index auto``);
3. search in each space (promoted in turn): hybrid p50/p95 with the query embeddings cached
   (each query is searched once before the timed runs), and recall@10 of the semantic branch
   against an exact scan of the same space (``ORDER BY`` without the index).

Peak memory: every process is sampled (psutil, every 0.5 s) during each phase: the clipembed
command, the fake provider, and PostgreSQL (its largest backend and the sum of all of them).
Table and index sizes come from ``clipembed model list --json``.

    python -m bench.million [--clips 1000000] [--import bulk|cli] [--storages halfvec,vector]
                            [--queries 200] [--recall-queries 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from pgvector.psycopg import register_vector

from bench import common
from clipembed import demo_data, runtime, settings
from clipembed.search import clips as clip_search
from clipembed.search import core

KEY = "sk-bench-000000000000000000"
DIMS = 768


def make_file(directory: Path, count: int) -> Path:
    path = directory / f"clips-{count}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for clip in demo_data.generate(count, seed=7):
            fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
    return path


COPY_CLIPS = (
    "COPY clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,"
    " broadcaster_name, game_name, language, created_at) FROM STDIN"
)


def bulk_load(url: str, path: Path) -> dict[str, float]:
    """COPY with row triggers off, then search vectors and postings set-based (as 0005)."""
    import datetime as dt

    schema = Path(__file__).resolve().parents[1] / "clipembed" / "db" / "schema"
    rebuild = (schema / "0005_language.up.sql").read_text()
    rebuild = rebuild[rebuild.index("UPDATE clips SET search_vector =") :]
    timings: dict[str, float] = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # a bulk loader: no row triggers
        t = time.monotonic()
        with gzip.open(path, "rt", encoding="utf-8") as fh, conn.cursor().copy(COPY_CLIPS) as copy:
            for line in fh:
                c = json.loads(line)
                copy.write_row(
                    (
                        c["twitch_clip_id"], c["twitch_clip_url"], c["embed_url"], c["title"],
                        c["creator_name"], c["broadcaster_name"], c.get("game_name"),
                        c.get("language"),
                        dt.datetime.fromisoformat(c["created_at"].replace("Z", "+00:00")),
                    )
                )  # fmt: skip
        conn.commit()
        timings["copy_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(rebuild.encode())
        conn.execute("SET session_replication_role = origin")
        conn.commit()
        timings["search_postings_s"] = round(time.monotonic() - t, 1)
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.monotonic()
        conn.execute("VACUUM ANALYZE clips")
        conn.execute("VACUUM ANALYZE clip_postings")
        # the counters of migration 0007, recomputed as after any bulk load
        conn.execute(
            "TRUNCATE clipembed_counters; INSERT INTO clipembed_counters (slot, model, live, "
            "removed, embedded) SELECT 0, '', count(*) FILTER (WHERE NOT is_removed), "
            "count(*) FILTER (WHERE is_removed), 0 FROM clips"
        )
        timings["vacuum_s"] = round(time.monotonic() - t, 1)
    return timings


class PeakMemory:
    """Samples the RSS of every process of interest until stopped (MiB)."""

    def __init__(self, roles: dict[str, list[str]]) -> None:
        self.roles = roles  # role -> substrings of the command line
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            totals: dict[str, float] = {}
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                try:
                    cmd = " ".join(proc.info["cmdline"] or [])
                    rss = proc.info["memory_info"].rss / 2**20
                except (psutil.Error, TypeError, AttributeError):
                    continue
                for role, needles in self.roles.items():
                    if any(n in cmd for n in needles):
                        self.peak[role] = max(self.peak.get(role, 0.0), rss)
                        totals[role] = totals.get(role, 0.0) + rss
            for role, total in totals.items():
                key = f"{role} (all processes)"
                self.peak[key] = max(self.peak.get(key, 0.0), total)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in sorted(self.peak.items())}


ROLES = {
    "clipembed": ["-m clipembed "],
    "fake provider": ["clipembed.testing.fakeopenai"],
    "postgres": ["postgres:", "bin/postgres"],
}


@contextmanager
def phase(results: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    entry: dict[str, Any] = {}
    print(f"--- {name}", flush=True)
    with PeakMemory(ROLES) as mem:
        t = time.monotonic()
        yield entry
        entry["seconds"] = round(time.monotonic() - t, 1)
    entry["peak_rss_mib"] = mem.report()
    results[name] = entry
    print(json.dumps({name: entry}, default=str), flush=True)


def save_partial(results: dict[str, Any]) -> None:
    """What is measured so far (a long run that is stopped still leaves its phases)."""
    common.RESULTS.mkdir(exist_ok=True)
    (common.RESULTS / "million.partial.json").write_text(json.dumps(results, indent=2, default=str))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def queries_from(url: str, n: int) -> list[str]:
    """Two or three words of random clip titles: what people type."""
    with psycopg.connect(url) as conn:
        titles = [
            r[0]
            for r in conn.execute(
                "SELECT title FROM clips TABLESAMPLE SYSTEM (1) LIMIT %s", (n * 3,)
            ).fetchall()
        ]
    rng = random.Random(11)
    out = []
    for title in rng.sample(titles, min(n, len(titles))):
        words = [w for w in title.split() if w.isalnum()] or title.split()
        out.append(" ".join(words[: rng.choice((2, 3))]) or title[:20])
    return out


async def search_timings(cfg: settings.Settings, texts: list[str]) -> dict[str, Any]:
    """Hybrid search p50/p95 in the active space, the query embeddings cached first."""
    params = core.Params(mode="hybrid", limit=20)
    filters = clip_search.Filters()
    async with runtime.open_runtime(cfg, search=True) as rt:
        for text in texts:  # warm: the query embeddings go to the cache
            await clip_search.search_detailed(
                rt.reader, rt.service_for, text, params=params, filters=filters
            )
        times, space = [], None
        for text in texts:
            t = time.perf_counter()
            outcome = await clip_search.search_detailed(
                rt.reader, rt.service_for, text, params=params, filters=filters
            )
            times.append((time.perf_counter() - t) * 1000)
            space = outcome.space["name"]
            if outcome.degraded:  # (the query lane logs the reason)
                raise RuntimeError(f"search degraded {outcome.degraded}: see the log above")
    return {
        "space": space,
        "queries": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "max_ms": round(max(times), 1),
    }


def recall(url: str, table: str, storage: str, texts: list[str], ef_search: int) -> dict[str, Any]:
    """recall@10 of the HNSW index against an exact scan of the same table."""
    from clipembed.testing.fakeopenai import expected_vector

    cast = "halfvec" if storage == "halfvec" else "vector"
    hits, exact_seconds = [], []
    with psycopg.connect(url) as conn:
        register_vector(conn)
        for text in texts:
            v = np.asarray(expected_vector(text, DIMS), dtype=np.float32)
            with conn.transaction():
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
                ann = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT clip_id FROM {table} ORDER BY embedding <=> %s::{cast} LIMIT 10",
                        (v,),
                    ).fetchall()
                ]
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
                t = time.perf_counter()
                exact = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT clip_id FROM {table} ORDER BY embedding <=> %s::{cast} LIMIT 10",
                        (v,),
                    ).fetchall()
                ]
                exact_seconds.append(time.perf_counter() - t)
            hits.append(len(set(ann) & set(exact)) / 10)
    return {
        "queries": len(texts),
        "ef_search": ef_search,
        "recall_at_10": round(statistics.fmean(hits), 4),
        "exact_scan_seconds_mean": round(statistics.fmean(exact_seconds), 2),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument("--import", dest="importer", choices=("bulk", "cli"), default="bulk")
    parser.add_argument("--storages", default="halfvec,vector")
    args = parser.parse_args()
    storages = [x.strip() for x in args.storages.split(",") if x.strip()]
    results: dict[str, Any] = {
        "clips": args.clips,
        "dimensions": DIMS,
        "import": args.importer,
        "storages": storages,
        "command": "python -m bench.million " + " ".join(sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = time.monotonic()
        data = make_file(tmp, args.clips)
        results["generate_file_seconds"] = round(time.monotonic() - t, 1)
        with common.postgres() as url, common.fake_provider() as base:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET maintenance_work_mem = '8GB'")
                conn.execute("SELECT pg_reload_conf()")
            e = common.env(
                DATABASE_URL=url,
                EMBEDDING_PROVIDER="openai",
                OPENAI_API_KEY=KEY,
                EMBEDDING_API_BASE_URL=base,
                EMBEDDING_MODEL="text-embedding-3-small",
                EMBEDDING_DIMENSIONS=str(DIMS),
                REDIS_URL="embedded",
                CLIPEMBED_REDIS_PREFIX="bench-million:",
                EMBEDDING_CACHE_TTL_DAYS="0",  # the backfills must not hit the cache
                EMBEDDING_REQUESTS_PER_MINUTE="10000000",
                EMBEDDING_TOKENS_PER_MINUTE="10000000000",
                EMBEDDING_MAX_CONCURRENCY="8",
                CLIPEMBED_HOME=str(tmp / "home"),
                CLIPEMBED_LOG_LEVEL="WARNING",
            )
            common.clipembed("migrate", "up", env_vars=e)
            with phase(results, "import") as p:
                if args.importer == "cli":
                    out, _, _ = common.clipembed("import", str(data), env_vars=e)
                    p["output"] = out.stdout.strip()[-200:]
                else:
                    p.update(bulk_load(url, data))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM embedding_queue")  # the backlog is the backfills'
            tables: dict[str, tuple[str, str]] = {}
            for storage in storages:
                name = {"halfvec": "hv", "vector": "vec"}[storage]
                common.clipembed(
                    "model", "add", name, "--provider", "openai", "--model",
                    "text-embedding-3-small", "--dimensions", str(DIMS), "--storage", storage,
                    "--no-check", env_vars=e,
                )  # fmt: skip
                with phase(results, f"backfill {storage}") as p:
                    out, _, _ = common.clipembed("model", "backfill", name, "--json", env_vars=e)
                    p["summary"] = json.loads(out.stdout.strip().splitlines()[-1])
                out, _, _ = common.clipembed("model", "list", "--json", env_vars=e)
                listed = {x["name"]: x for x in json.loads(out.stdout)}
                tables[name] = (listed[name]["table"], storage)
                results.setdefault("spaces", {})[name] = {
                    k: listed[name][k]
                    for k in ("storage", "embedded", "live_clips", "table_bytes", "index_bytes")
                }
                save_partial(results)
            texts = queries_from(url, args.queries)
            cfg = settings.load(
                database_url=url,
                embedding_provider="openai",
                openai_api_key=KEY,
                embedding_api_base_url=base,
                embedding_model="text-embedding-3-small",
                embedding_dimensions=DIMS,
                redis_url=e["REDIS_URL"],
                clipembed_redis_prefix="bench-million-q:",
                clipembed_home=tmp / "home",
                embedding_requests_per_minute=10_000_000,
                embedding_tokens_per_minute=10_000_000_000,
                # the warm-up pass fills the cache; its first call loads the tokenizer
                search_embed_timeout_ms=30_000,
            )
            for name, (table, storage) in tables.items():
                common.clipembed("model", "promote", name, "--no-sync", "--force", env_vars=e)
                with phase(results, f"search {storage}") as p:
                    p["hybrid"] = asyncio.run(search_timings(cfg, texts))
                    p["recall"] = recall(url, table, storage, texts[: args.recall_queries], 100)
                    p["recall_ef40"] = recall(url, table, storage, texts[: args.recall_queries], 40)
                save_partial(results)
    common.save("million", results)


if __name__ == "__main__":
    main()
