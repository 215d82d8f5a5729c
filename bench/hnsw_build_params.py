"""Recall@10 of a space's raw HNSW index against a full scan: the product's build (m 16,
ef_construction 64) and m 32 / ef_construction 128, the same queries, no filter, no join.

On the database ``bench.million --keep DIR`` left (its halfvec space ``embeddings_space_2``):
the exact top 10 of each query by a full scan; recall at ef_search 200 and 400 through the
product's index; then a second index with the larger build, timed, and the same recall through
it alone (the product's index dropped inside a transaction that is rolled back); the second
index is dropped at the end.

    python -m bench.hnsw_build_params --keep /work/m1m [--queries 40]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench import common
from bench.million import queries_from
from bench.million_search import vector_for

RAW = "SELECT clip_id FROM (SELECT clip_id, embedding <=> %(v)s::halfvec AS d FROM embeddings_space_2 ORDER BY embedding <=> %(v)s::halfvec LIMIT 200) t ORDER BY d LIMIT 10"
EXACT = "SELECT clip_id FROM embeddings_space_2 ORDER BY embedding <=> %(v)s::halfvec LIMIT 10"


def recall(
    conn: psycopg.Connection[Any], vs: list[np.ndarray], truths: list[set[Any]], ef: int
) -> tuple[float, float]:
    """Mean recall@10 and mean ms per query at ``ef`` through whichever HNSW index there is."""
    got = []
    with conn.transaction():
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
        conn.execute("SET LOCAL enable_seqscan = off")
        t = time.perf_counter()
        for v, truth in zip(vs, truths, strict=True):
            ids = {r[0] for r in conn.execute(RAW, {"v": v}).fetchall()}
            got.append(len(ids & truth) / 10)
        ms = (time.perf_counter() - t) * 1000 / len(vs)
    return round(float(np.mean(got)), 4), round(ms, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    with common.postgres(keep=args.keep) as url:
        texts = queries_from(url, args.queries)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            register_vector(conn)
            conn.execute("SET search_path = clipembed, public")
            vs = [np.asarray(vector_for(t, 768, "words"), dtype=np.float32) for t in texts]
            truths = []
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
                for v in vs:
                    truths.append({r[0] for r in conn.execute(EXACT, {"v": v}).fetchall()})
            out: dict[str, Any] = {"queries": len(vs)}
            for ef in (200, 400):
                out[f"m16_ef{ef}"] = recall(conn, vs, truths, ef)
            print(out, flush=True)
            conn.execute("SET maintenance_work_mem = '8GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")
            t = time.perf_counter()
            conn.execute(
                "CREATE INDEX IF NOT EXISTS hv_m32 ON embeddings_space_2"
                " USING hnsw (embedding halfvec_cosine_ops) WITH (m = 32, ef_construction = 128)"
            )
            out["m32_build_s"] = round(time.perf_counter() - t, 1)
            size = conn.execute("SELECT pg_relation_size('hv_m32')").fetchone()
            out["m32_bytes"] = size[0] if size else None
            print(out, flush=True)
            conn.autocommit = False
            conn.execute("DROP INDEX embeddings_space_2_hnsw")
            for ef in (200, 400):
                out[f"m32_ef{ef}"] = recall(conn, vs, truths, ef)
            conn.rollback()
            conn.autocommit = True
            conn.execute("DROP INDEX hv_m32")
            common.save("hnsw_build_params", out)


if __name__ == "__main__":
    main()
