"""A million clips, end to end, for ``vector`` and ``halfvec`` storage at 768 dimensions.

Phases, against a private PostgreSQL and the fake provider (a process of its own, 50 ms per
request, no limit; ``--vectors words``: a text's vector is the normalised sum of its words'
vectors, so titles that share words are near each other as real embeddings of related texts are,
and recall is measured on data with structure, not on uniform noise):

1. ``clipembed import`` of N generated clips through its bulk path (the product's command,
   progress bar and all; ``--import rows`` for the row path);
2. for each storage (``--storages halfvec,vector``): ``clipembed model add`` a space of that
   storage and ``clipembed model backfill`` it (defaults, ``--index auto``: the HNSW index
   dropped and built once at the end), sizes from ``clipembed model list --json``;
3. per space (promoted in turn): keyword, semantic and hybrid p50/p95 in-process with the query
   embeddings cached; recall@10 of the product's vector branch (``core.semantic_branch``, the
   iterative index scan included) against the same statement with index scans off, unfiltered
   and filtered by one game and by one broadcaster; binary quantization with re-ranking on the
   halfvec space (an expression index on ``binary_quantize(embedding)::bit(768)``: size, build
   time, recall@10 and p95 per re-rank factor);
4. ``/status`` p95 in-process and over HTTP, and search over HTTP through ``clipembed serve``
   (a 20 ms provider, unique uncached queries): one client per mode, then 16 clients hybrid.

Peak memory: every process is sampled (psutil, every 0.5 s) during each phase: the clipembed
command, the fake provider, and PostgreSQL (its largest backend and the sum of all of them).
The load average is recorded at the start of every phase (the run must have the machine alone).

    python -m bench.million [--clips 1000000] [--import bulk|rows] [--storages halfvec,vector]
                            [--queries 200] [--recall-queries 50] [--vectors words|hash]
                            [--index-kind hnsw|ivfflat] [--space-suffix S]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import common
from bench import million_search as search
from clipembed import demo_data, settings

KEY = "sk-bench-000000000000000000"
DIMS = 768


def make_file(directory: Path, count: int) -> Path:
    path = directory / f"clips-{count}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for clip in demo_data.generate(count, seed=7):
            fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
    return path


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


def queries_from(url: str, n: int) -> list[str]:
    """Two or three words of random clip titles: what people type."""
    with psycopg.connect(url) as conn:
        titles = [
            r[0]
            for r in conn.execute(
                "SELECT title FROM clips TABLESAMPLE SYSTEM (1) REPEATABLE (7) LIMIT %s", (n * 3,)
            ).fetchall()
        ]
    rng = random.Random(11)
    out = []
    for title in rng.sample(titles, min(n, len(titles))):
        words = [w for w in title.split() if w.isalnum()] or title.split()
        out.append(" ".join(words[: rng.choice((2, 3))]) or title[:20])
    return out


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument("--import", dest="importer", choices=("bulk", "rows"), default="bulk")
    parser.add_argument("--storages", default="halfvec,vector")
    parser.add_argument("--vectors", choices=("words", "hash"), default="words")
    parser.add_argument("--http-clients", type=int, default=16)
    parser.add_argument(
        "--keep", type=Path, default=None,
        help="keep the database in this directory; a rerun reuses its clips and spaces",
    )  # fmt: skip
    parser.add_argument("--ef", default="40,100,200", help="ef_search values for recall")
    parser.add_argument(
        "--space-suffix", default="",
        help="spaces hv<suffix> / vec<suffix>: a new space beside kept ones (e.g. another kind)",
    )  # fmt: skip
    parser.add_argument(
        "--index-kind", choices=("hnsw", "ivfflat"), default=None,
        help="CLIPEMBED_INDEX_KIND; with --keep, a space whose index is of another kind has it"
        " rebuilt by `clipembed model backfill NAME --index rebuild` (timed)",
    )  # fmt: skip
    parser.add_argument(
        "--shared-buffers", default="6GB",
        help="PostgreSQL's shared_buffers (a quarter of this machine's memory; '' keeps the server's)",
    )  # fmt: skip
    parser.add_argument("--name", default="million", help="results file (bench/results/NAME.json)")
    parser.add_argument(
        "--skip",
        default="",
        help="phases to leave out: any of bq, http, recall, similar, timings (comma-separated)",
    )
    args = parser.parse_args()
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    storages = [x.strip() for x in args.storages.split(",") if x.strip()]
    results: dict[str, Any] = {
        "clips": args.clips,
        "dimensions": DIMS,
        "import": args.importer,
        "storages": storages,
        "vectors": args.vectors,
        "command": "python -m bench.million " + " ".join(sys.argv[1:]),
        "shared_buffers": args.shared_buffers or "the server's",
        "machine": common.machine(),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = (args.keep or tmp) / "home"
        vectors = ("--vectors", args.vectors)
        with (
            common.postgres(args.keep, shared_buffers=args.shared_buffers) as url,
            common.fake_provider("--latency-ms", "50", *vectors) as base,
            common.fake_provider("--latency-ms", "20", *vectors) as search_base,
        ):
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
                CLIPEMBED_HOME=str(home),
                CLIPEMBED_LOG_LEVEL="WARNING",
                **({"CLIPEMBED_INDEX_KIND": args.index_kind} if args.index_kind else {}),
            )
            common.clipembed("migrate", "up", env_vars=e)
            if existing_clips(url) >= args.clips:
                print(f"--- import: {args.clips} clips are there already (--keep)", flush=True)
            else:
                import_clips(results, tmp, args, e, url)
            listed = spaces_listed(e)
            tables: dict[str, tuple[str, str]] = {}
            for storage in storages:
                name = {"halfvec": "hv", "vector": "vec"}[storage] + args.space_suffix
                if name in listed and listed[name]["embedded"] >= args.clips:
                    print(f"--- backfill {storage}: done already (--keep)", flush=True)
                else:
                    backfill_space(results, name, storage, e)
                    listed = spaces_listed(e)
                tables[name] = (listed[name]["table"], storage)
                if args.index_kind and index_kind(url, listed[name]["table"]) != args.index_kind:
                    rebuild_index(results, name, args.index_kind, e)
                    listed = spaces_listed(e)
                results.setdefault("spaces", {})[name] = {
                    k: listed[name][k]
                    for k in ("storage", "embedded", "live_clips", "table_bytes", "index_bytes")
                }
                save_partial(results)
            search_phases(results, args, skip, tables, url, e, base, search_base, home)
    common.save(args.name, results)


def existing_clips(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM clips").fetchone()
    return int(row[0]) if row else 0


def spaces_listed(e: dict[str, str]) -> dict[str, Any]:
    out, _, _ = common.clipembed("model", "list", "--json", env_vars=e)
    return {x["name"]: x for x in json.loads(out.stdout)}


def import_clips(
    results: dict[str, Any], tmp: Path, args: argparse.Namespace, e: dict[str, str], url: str
) -> None:
    t = time.monotonic()
    data = make_file(tmp, args.clips)
    results["generate_file_seconds"] = round(time.monotonic() - t, 1)
    with phase(results, "import") as p:
        p["load_average_at_start"] = load_average()
        out, seconds, _ = common.clipembed("import", str(data), "--path", args.importer, env_vars=e)
        p["output"] = out.stdout.strip()[-200:]
        p["clips_per_s"] = round(args.clips / seconds)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM embedding_queue")  # the backlog is the backfills'
        conn.execute("VACUUM ANALYZE")
    save_partial(results)


def backfill_space(results: dict[str, Any], name: str, storage: str, e: dict[str, str]) -> None:
    common.clipembed(
        "model", "add", name, "--provider", "openai", "--model",
        "text-embedding-3-small", "--dimensions", str(DIMS), "--storage", storage,
        "--no-check", env_vars=e,
    )  # fmt: skip
    with phase(results, f"backfill {storage}") as p:
        p["load_average_at_start"] = load_average()
        out, seconds, _ = common.clipembed("model", "backfill", name, "--json", env_vars=e)
        p["summary"] = json.loads(out.stdout.strip().splitlines()[-1])
        p["clips_per_s_including_index"] = round(p["summary"]["processed"] / seconds, 1)


def index_kind(url: str, table: str) -> str | None:
    """The access method of a space's index (hnsw, ivfflat), None without one."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
            " WHERE c.oid = to_regclass(%s)",
            (f"{table}_hnsw",),
        ).fetchone()
    return str(row[0]) if row else None


def rebuild_index(results: dict[str, Any], name: str, kind: str, e: dict[str, str]) -> None:
    """The product's rebuild of a kept space's index as ``kind`` (every clip embedded already:
    the backfill embeds nothing, drops the index and builds it)."""
    with phase(results, f"index rebuild {name} {kind}") as p:
        p["load_average_at_start"] = load_average()
        out, seconds, _ = common.clipembed(
            "model", "backfill", name, "--index", "rebuild", "--json", env_vars=e
        )
        p["summary"] = json.loads(out.stdout.strip().splitlines()[-1])
        p["seconds"] = round(seconds, 1)


def search_phases(
    results: dict[str, Any],
    args: argparse.Namespace,
    skip: set[str],
    tables: dict[str, tuple[str, str]],
    url: str,
    e: dict[str, str],
    base: str,
    search_base: str,
    home: Path,
) -> None:
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
        clipembed_home=home,
        embedding_requests_per_minute=10_000_000,
        embedding_tokens_per_minute=10_000_000_000,
        # the warm-up pass fills the cache; its first call loads the tokenizer
        search_embed_timeout_ms=30_000,
    )
    recall_texts = texts[: args.recall_queries]
    for name, (table, storage) in tables.items():
        common.clipembed("model", "promote", name, "--no-sync", "--force", env_vars=e)
        with phase(results, f"search {storage}") as p:
            p["load_average_at_start"] = load_average()
            if "timings" not in skip:
                p["in_process"] = asyncio.run(search.timings(cfg, texts, search.filter_cases(url)))
            if "recall" not in skip:
                for ef in (int(x) for x in args.ef.split(",") if x.strip()):
                    p[f"recall_ef{ef}"] = asyncio.run(
                        search.recall(url, name, recall_texts, DIMS, args.vectors, ef)
                    )
            if "similar" not in skip:
                for ef in (int(x) for x in args.ef.split(",") if x.strip()):
                    p[f"recall_own_vectors_ef{ef}"] = asyncio.run(
                        search.recall_own_vectors(url, name, args.recall_queries, ef)
                    )
            if storage == "halfvec" and "bq" not in skip:
                p["binary_quantized"] = search.binary_quantized(
                    url, table, DIMS, recall_texts, args.vectors
                )
            if "http" not in skip:
                http_env = e | {"EMBEDDING_API_BASE_URL": search_base}
                p["http"] = search.over_http(http_env, url, texts, args.http_clients)
        save_partial(results)


if __name__ == "__main__":
    main()
