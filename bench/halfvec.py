"""``vector`` vs ``halfvec`` storage for the embeddings: size, HNSW build time, recall, latency.

The same 100,000 clustered unit vectors of 768 dimensions (``bench.search_speed.vectors``: unit
vectors around 2,000 random centroids, like text embeddings) are loaded by binary COPY into two
tables on one private PostgreSQL (``bench.common.postgres``), one with a ``vector(768)`` column
and one with a ``halfvec(768)`` column (pgvector >= 0.7, half precision: 2 bytes a dimension).
Each gets the product's HNSW index (``clipembed.store.space_table``: ``index_build_settings``, m = 16,
ef_construction = 64; ``vector_cosine_ops`` / ``halfvec_cosine_ops``), timed. Measured per type:

* table size (heap + TOAST) and HNSW index size;
* index build time (wall clock; the machine's load average is in the results);
* recall@10 of the HNSW search against exact search over the same column type
  (``ORDER BY embedding <=> q`` with ``enable_indexscan = off``) at ef_search 40, 100, 200,
  and p50/p95 of the HNSW query as seen by the client (one connection, after a warm-up pass,
  the two types interleaved query by query so background load falls on both alike);
* how much half precision alone changes the answer: halfvec's exact top-10 against vector's,
  and halfvec's HNSW top-10 against vector's exact top-10 (what a user would lose overall).

Queries are drawn like the data (the same centroids and noise, a different seed).

    python -m bench.halfvec [--rows 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from bench import common
from bench.search_speed import CLUSTERS, DIMS, NOISE, vectors
from clipembed.store import space_table

EF_SEARCH = (40, 100, 200)
#: The product's build settings for a one-pass build on this machine's 2 cores.
BUILD_SETTINGS = space_table.index_build_settings(workers=1, memory_mb=1024)
TYPES = {
    # column type -> (table, operator class)
    "vector": ("bench_vector", "vector_cosine_ops"),
    "halfvec": ("bench_halfvec", "halfvec_cosine_ops"),
}


def probes(count: int) -> np.ndarray:
    """Queries like the data: the centroids of ``vectors()`` (seed 7), new picks and noise."""
    rng = np.random.default_rng(7)
    centroids = rng.standard_normal((CLUSTERS, DIMS)).astype(np.float32)
    q = np.random.default_rng(1234)
    out = centroids[q.integers(0, CLUSTERS, count)] + NOISE * q.standard_normal(
        (count, DIMS)
    ).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _param(kind: str, v: np.ndarray) -> Any:
    return HalfVector(v) if kind == "halfvec" else v


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def load_and_index(conn: psycopg.Connection, kind: str, data: np.ndarray) -> dict[str, Any]:
    table, opclass = TYPES[kind]
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, embedding {kind}({DIMS}) NOT NULL)")
    t = time.monotonic()
    with conn.cursor().copy(f"COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as cp:
        cp.set_types(["int4", kind])
        for i, v in enumerate(data):
            cp.write_row((i, _param(kind, v)))
    copy_seconds = time.monotonic() - t
    conn.execute(f"VACUUM ANALYZE {table}")
    for statement in BUILD_SETTINGS:
        conn.execute(statement)
    t = time.monotonic()
    conn.execute(
        f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding {opclass}) "
        "WITH (m = 16, ef_construction = 64)"
    )
    build_seconds = time.monotonic() - t
    conn.execute(f"VACUUM ANALYZE {table}")
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass), pg_table_size(%s::regclass), "
        "pg_relation_size(%s::regclass), pg_total_relation_size(%s::regclass)",
        (table, table, f"{table}_hnsw", table),
    ).fetchone()
    assert row is not None
    heap, table_size, index_size, total = row
    storage = conn.execute(
        "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
        (table,),
    ).fetchone()
    return {
        "copy_seconds": round(copy_seconds, 1),
        "index_build_seconds": round(build_seconds, 1),
        "heap_mib": _mib(heap),
        "table_mib": _mib(table_size),  # heap + TOAST + free space / visibility maps
        "hnsw_index_mib": _mib(index_size),
        "total_with_indexes_mib": _mib(total),  # includes the primary key
        "column_storage": storage[0] if storage else None,
    }


def exact(url: str, kind: str, qs: np.ndarray) -> tuple[list[list[int]], float]:
    """Exact top-10 on a connection of its own, never prepared: a prepared statement's cached
    plan survives ``enable_indexscan`` changing, so sharing one with the HNSW timing would
    silently time (and score) the sequential scan there too."""
    table, _ = TYPES[kind]
    out, times = [], []
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT 10",
            (_param(kind, qs[0]),),
        ).fetchall()
        assert not any("hnsw" in r[0] for r in plan), plan
        for v in qs:
            t = time.perf_counter()
            rows = conn.execute(
                f"SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT 10", (_param(kind, v),)
            ).fetchall()
            times.append((time.perf_counter() - t) * 1000)
            out.append([r[0] for r in rows])
    return out, statistics.median(times)


def hnsw(
    conn: psycopg.Connection,
    qs: np.ndarray,
    truths: dict[str, list[list[int]]],
) -> dict[str, dict[str, Any]]:
    """HNSW top-10 per type and ef_search, the two types interleaved query by query (a busy
    machine's load then falls on both alike). Recall is against exact search over the same
    type; for halfvec also against vector's exact top-10 (what half precision costs overall)."""
    sql = {
        kind: f"SELECT id FROM {table} ORDER BY embedding <=> %b LIMIT 10"
        for kind, (table, _) in TYPES.items()
    }
    params = {kind: [_param(kind, v) for v in qs] for kind in TYPES}
    for kind in TYPES:
        plan = conn.execute("EXPLAIN " + sql[kind], (params[kind][0],)).fetchall()
        assert any("hnsw" in r[0] for r in plan), plan
    conn.execute("SET hnsw.ef_search = 40")
    for i in range(len(qs)):  # warm-up pass: index and heap pages in the caches
        for kind in TYPES:
            conn.execute(sql[kind], (params[kind][i],)).fetchall()
    out: dict[str, dict[str, Any]] = {kind: {} for kind in TYPES}
    for ef in EF_SEARCH:
        conn.execute(f"SET hnsw.ef_search = {ef}")
        times: dict[str, list[float]] = {kind: [] for kind in TYPES}
        recalls: dict[str, list[float]] = {kind: [] for kind in TYPES}
        against_full: list[float] = []
        for i in range(len(qs)):
            for kind in TYPES:
                t = time.perf_counter()
                rows = conn.execute(sql[kind], (params[kind][i],)).fetchall()
                times[kind].append((time.perf_counter() - t) * 1000)
                got = {r[0] for r in rows}
                recalls[kind].append(len(set(truths[kind][i]) & got) / 10)
                if kind == "halfvec":
                    against_full.append(len(set(truths["vector"][i]) & got) / 10)
        for kind in TYPES:
            out[kind][f"ef_search={ef}"] = {
                "recall@10": round(sum(recalls[kind]) / len(recalls[kind]), 4),
                "recall@10_min": min(recalls[kind]),
                **common.percentiles(times[kind], 2),
            }
        out["halfvec"][f"ef_search={ef}"]["recall@10_vs_vector_exact"] = round(
            sum(against_full) / len(against_full), 4
        )
    conn.execute("RESET hnsw.ef_search")
    # proof that the timed queries scanned the HNSW indexes (see exact() on cached plans)
    conn.execute("SELECT pg_stat_force_next_flush()")
    for kind, (table, _) in TYPES.items():
        row = conn.execute(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (f"{table}_hnsw",)
        ).fetchone()
        out[kind]["hnsw_index_scans"] = row[0] if row else None
        out[kind]["queries_run"] = len(qs) * (1 + len(EF_SEARCH))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    started = common.machine()
    data = vectors(args.rows)
    qs = probes(args.queries)
    result: dict[str, Any] = {
        "rows": args.rows,
        "dimensions": DIMS,
        "queries": args.queries,
        "vectors": f"{CLUSTERS} clusters, noise {NOISE} (bench.search_speed.vectors)",
        "index": "hnsw m = 16, ef_construction = 64, cosine; "
        + "; ".join(s.as_string(None) for s in BUILD_SETTINGS),
    }
    with common.postgres() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        result["postgres"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        result["pgvector"] = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]  # type: ignore[index]
        result["shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]  # type: ignore[index]
        truths: dict[str, list[list[int]]] = {}
        for kind in TYPES:
            print(f"== {kind}: load and index", flush=True)
            result[kind] = load_and_index(conn, kind, data)
            result[kind]["load_average_after_build"] = [round(x, 2) for x in os.getloadavg()]
            print(result[kind], flush=True)
        for kind in TYPES:
            print(f"== {kind}: exact search", flush=True)
            truths[kind], exact_ms = exact(url, kind, qs)
            result[kind]["exact_search_p50_ms"] = round(exact_ms, 1)
        print("== HNSW search", flush=True)
        for kind, section in hnsw(conn, qs, truths).items():
            result[kind]["hnsw"] = section
        result["load_average_after_search"] = [round(x, 2) for x in os.getloadavg()]
    overlap = [
        len(set(h) & set(v)) / 10 for h, v in zip(truths["halfvec"], truths["vector"], strict=True)
    ]
    result["halfvec_exact_vs_vector_exact@10"] = {
        "mean": round(sum(overlap) / len(overlap), 4),
        "min": min(overlap),
        "identical_sets": sum(o == 1.0 for o in overlap),
    }
    result["size_ratio_halfvec_to_vector"] = {
        "table": round(result["halfvec"]["table_mib"] / result["vector"]["table_mib"], 3),
        "hnsw_index": round(
            result["halfvec"]["hnsw_index_mib"] / result["vector"]["hnsw_index_mib"], 3
        ),
        "index_build_time": round(
            result["halfvec"]["index_build_seconds"] / result["vector"]["index_build_seconds"], 3
        ),
    }
    result["load_average_at_start_of_run"] = started["load_average_at_start"]
    common.save("halfvec", result)


if __name__ == "__main__":
    main()
