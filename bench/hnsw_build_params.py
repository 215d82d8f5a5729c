"""Recall@10 of a space's raw HNSW index against a full scan: the product's build (m 16,
ef_construction 64) and another (``--m``, ``--ef-construction``; m 32 / 128 by default), the
same queries (text queries, and ``--own N`` clips' own vectors), no filter, no join.

On the database ``bench.million --keep DIR`` left (its halfvec space ``embeddings_space_2``):
the exact top 10 of each query by a full scan; recall at ef_search 200 and 400 through the
product's index; then a second index with the larger build, timed, and the same recall through
it alone (the product's index dropped inside a transaction that is rolled back); the second
index is dropped at the end.

    python -m bench.hnsw_build_params --keep /work/m1m [--queries 40] [--own 60] [--m 16]
        [--ef-construction 200] [--workers 1] [--name NAME]
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
    parser.add_argument("--own", type=int, default=0, help="also this many clips' own vectors")
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1, help="max_parallel_maintenance_workers")
    parser.add_argument("--name", default="hnsw_build_params")
    args = parser.parse_args()
    built = f"m{args.m}_efc{args.ef_construction}"
    with common.postgres(keep=args.keep) as url:
        texts = queries_from(url, args.queries)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            register_vector(conn)
            conn.execute("SET search_path = clipembed, public")
            sets = {
                "text": [np.asarray(vector_for(t, 768, "words"), dtype=np.float32) for t in texts]
            }
            if args.own:
                rows = conn.execute(
                    "SELECT embedding::vector FROM embeddings_space_2"
                    " TABLESAMPLE SYSTEM (0.1) REPEATABLE (5) LIMIT %s",
                    (args.own,),
                ).fetchall()
                sets["own"] = [r[0].to_numpy().astype(np.float32) for r in rows]
            truths: dict[str, list[set[Any]]] = {}
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
                for label, vs in sets.items():
                    truths[label] = [
                        {r[0] for r in conn.execute(EXACT, {"v": v}).fetchall()} for v in vs
                    ]
            out: dict[str, Any] = {"queries": {k: len(v) for k, v in sets.items()}}
            for label, vs in sets.items():
                for ef in (200, 400):
                    out[f"{label}_m16_efc64_ef{ef}"] = recall(conn, vs, truths[label], ef)
            print(out, flush=True)
            conn.execute("SET maintenance_work_mem = '8GB'")
            conn.execute(f"SET max_parallel_maintenance_workers = {int(args.workers)}")
            t = time.perf_counter()
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS hv_{built} ON embeddings_space_2 USING hnsw"
                f" (embedding halfvec_cosine_ops) WITH (m = {int(args.m)},"
                f" ef_construction = {int(args.ef_construction)})"
            )
            out[f"{built}_build_s"] = round(time.perf_counter() - t, 1)
            size = conn.execute("SELECT pg_relation_size(%s)", (f"hv_{built}",)).fetchone()
            out[f"{built}_bytes"] = size[0] if size else None
            print(out, flush=True)
            conn.autocommit = False
            conn.execute("DROP INDEX embeddings_space_2_hnsw")
            for label, vs in sets.items():
                for ef in (200, 400):
                    out[f"{label}_{built}_ef{ef}"] = recall(conn, vs, truths[label], ef)
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"DROP INDEX hv_{built}")
            common.save(args.name, out)


if __name__ == "__main__":
    main()
