"""Recall@10 and latency of an IVFFlat index beside the space's HNSW index, on the million.

Why: at a million template-made clips, two- and three-word text queries miss with HNSW whatever
the search effort (docs/benchmarks.md): such a query lies far from every clip, the similarity
landscape around it is flat, and a greedy walk that starts in the wrong region stays there.
An inverted-file index does not walk: it ranks all its lists' centroids against the query and
scans the nearest ``probes`` lists exactly. This measures whether that holds recall on the same
queries, and at what cost (build time, size, milliseconds a query).

On the database ``bench.million --keep DIR`` left (its halfvec space ``embeddings_space_2``):
the exact top 10 of each query by a full scan (cached in ``DIR/truths-N.json``, 2-3 s each);
recall (strict and ann-benchmarks' epsilon 0.01) and ms per query through the product's HNSW
index at each ``--ef``; then an IVFFlat index with ``--lists`` lists is built (timed) and the
same queries go through it alone (the HNSW index dropped inside a transaction that is rolled
back) at each ``--probes``. The IVFFlat index is dropped at the end unless ``--keep-index``.

    python -m bench.ivf_recall --keep /work/m1m [--queries 200] [--lists 1000]
        [--probes 10,20,40,80] [--ef 200,400] [--workers 2] [--name ivf_recall]
        [--existing]   # the space's own IVFFlat index at --probes only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench import common
from bench.million import queries_from
from bench.million_search import recall_within, vector_for

TABLE = "embeddings_space_2"
ANN = (
    "SELECT clip_id, 1 - d FROM (SELECT clip_id, embedding <=> %(v)s::halfvec AS d"
    f" FROM {TABLE} ORDER BY embedding <=> %(v)s::halfvec LIMIT 10) t ORDER BY d"
)
EXACT = (
    f"SELECT clip_id, 1 - (embedding <=> %(v)s::halfvec) FROM {TABLE}"
    " ORDER BY embedding <=> %(v)s::halfvec LIMIT 10"
)

Ranked = list[tuple[Any, float]]


def exact_tops(
    conn: psycopg.Connection[Any], texts: list[str], vs: list[np.ndarray], cache: Path
) -> list[Ranked]:
    """The exact top 10 of each query, from ``cache`` where it has the query already."""
    known: dict[str, Ranked] = json.loads(cache.read_text()) if cache.exists() else {}
    todo = [(t, v) for t, v in zip(texts, vs, strict=True) if t not in known]
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
        for i, (text, v) in enumerate(todo):
            known[text] = [
                (str(r[0]), float(r[1])) for r in conn.execute(EXACT, {"v": v}).fetchall()
            ]
            if i % 20 == 19:
                cache.write_text(json.dumps(known))
                print(f"  exact {i + 1}/{len(todo)}", flush=True)
    cache.write_text(json.dumps(known))
    return [[(a, b) for a, b in known[t]] for t in texts]


def measure(
    conn: psycopg.Connection[Any],
    settings: dict[str, str],
    vs: list[np.ndarray],
    truths: list[Ranked],
) -> dict[str, Any]:
    """Recall (strict, epsilon) and latency (p50, p95 ms) of whichever index answers ``ANN``."""
    strict, within, ms = [], [], []
    with conn.transaction():
        for key, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (key, value))
        conn.execute("SET LOCAL enable_seqscan = off")
        for v, truth in zip(vs, truths, strict=True):
            t = time.perf_counter()
            got = [(str(r[0]), float(r[1])) for r in conn.execute(ANN, {"v": v}).fetchall()]
            ms.append((time.perf_counter() - t) * 1000)
            strict.append(len({a for a, _ in got} & {a for a, _ in truth}) / 10)
            within.append(recall_within(truth, got))
    return {
        "recall": round(float(np.mean(strict)), 4),
        "recall_epsilon": round(float(np.mean(within)), 4),
        "perfect": sum(1 for s in strict if s == 1.0),
        "below_half": sum(1 for s in strict if s < 0.5),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--lists", type=int, default=1000)
    parser.add_argument("--probes", default="10,20,40,80")
    parser.add_argument("--ef", default="200,400")
    parser.add_argument("--workers", type=int, default=2, help="max_parallel_maintenance_workers")
    parser.add_argument("--keep-index", action="store_true")
    parser.add_argument(
        "--existing", action="store_true",
        help="measure the space's own index (an IVFFlat one) at --probes: no HNSW, no build",
    )  # fmt: skip
    parser.add_argument("--name", default="ivf_recall")
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": common.machine(), "lists": args.lists}
    with common.postgres(keep=args.keep) as url:
        texts = queries_from(url, args.queries)
        vs = [np.asarray(vector_for(t, 768, "words"), dtype=np.float32) for t in texts]
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            register_vector(conn)
            conn.execute("SET search_path = clipembed, public")
            truths = exact_tops(conn, texts, vs, args.keep / f"truths-{len(texts)}.json")
            out["queries"] = len(texts)
            if args.existing:
                for probes in [int(x) for x in args.probes.split(",") if x]:
                    key = f"existing_probes{probes}"
                    out[key] = measure(conn, {"ivfflat.probes": str(probes)}, vs, truths)
                    print(f"existing index, probes {probes}: {out[key]}", flush=True)
                common.save(args.name, out)
                return
            for ef in [int(x) for x in args.ef.split(",") if x]:
                out[f"hnsw_ef{ef}"] = measure(conn, {"hnsw.ef_search": str(ef)}, vs, truths)
                print(f"hnsw ef {ef}: {out[f'hnsw_ef{ef}']}", flush=True)
            name = f"ivf_{args.lists}"
            conn.execute("SET maintenance_work_mem = '8GB'")
            conn.execute(f"SET max_parallel_maintenance_workers = {int(args.workers)}")
            t = time.perf_counter()
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} USING ivfflat"
                f" (embedding halfvec_cosine_ops) WITH (lists = {int(args.lists)})"
            )
            out["ivf_build_s"] = round(time.perf_counter() - t, 1)
            size = conn.execute("SELECT pg_relation_size(%s)", (name,)).fetchone()
            out["ivf_bytes"] = size[0] if size else None
            print(f"ivfflat built in {out['ivf_build_s']} s, {out['ivf_bytes']} bytes", flush=True)
            conn.autocommit = False
            conn.execute(f"DROP INDEX {TABLE}_hnsw")
            for probes in [int(x) for x in args.probes.split(",") if x]:
                key = f"ivf_probes{probes}"
                out[key] = measure(conn, {"ivfflat.probes": str(probes)}, vs, truths)
                print(f"ivfflat probes {probes}: {out[key]}", flush=True)
            conn.rollback()
            conn.autocommit = True
            if not args.keep_index:
                conn.execute(f"DROP INDEX {name}")
    common.save(args.name, out)


if __name__ == "__main__":
    main()
