"""What completing hybrid's vector ranking costs a search (``ranking.completed``).

On the database ``bench.million --keep DIR`` left (its halfvec space, ``--space``): for each of
N queries (two or three title words, ``million.queries_from``), hybrid ``ranking.rank`` with the
completion and without it, alternating in one process (the order flips every query), so that
the machine's drift falls on both arms alike; then the completion step alone on the branches'
lists: its time, how many keyword candidates it looked up, and how many it ranked.

    python -m bench.search_completion --keep /work/m1m [--queries 200] [--space hv]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async

from bench import common
from bench.million import queries_from
from bench.million_search import opened, vector_for
from clipembed.search import clips as clip_search
from clipembed.search import core, ranking

DIMS = 768


async def _passthrough(
    conn: Any, corpus: Any, vector: Any, keyword: Any, semantic: Any, n: int
) -> list[tuple[Any, float]]:
    return list(semantic)


async def measure(url: str, space: str, texts: list[str]) -> dict[str, Any]:
    params = core.Params(mode="hybrid", limit=20)
    where = clip_search.Filters().where()
    depth = ranking.branch_depth(params)
    vectors = [np.asarray(vector_for(t, DIMS, "words"), dtype=np.float32) for t in texts]
    arms: dict[str, list[float]] = {"with": [], "without": []}
    step_ms, looked_up, ranked = [], [], []
    async with opened(url, space) as (conn, _, corpus):
        second = await psycopg.AsyncConnection.connect(url, autocommit=True)
        async with second:
            await register_vector_async(second)
            await second.execute("SET search_path = clipembed, public")

            async def hybrid(text: str, v: np.ndarray) -> None:
                await ranking.rank(conn, corpus, query=text, embed_query=None, where=where,
                                   params=params, vector=v, semantic_conn=second)  # fmt: skip

            real = ranking.completed
            for i, (text, v) in enumerate(zip(texts, vectors, strict=True)):
                order = ("with", "without") if i % 2 == 0 else ("without", "with")
                for arm in order:
                    ranking.completed = real if arm == "with" else _passthrough  # type: ignore[assignment]
                    try:
                        started = time.perf_counter()
                        await hybrid(text, v)
                        arms[arm].append((time.perf_counter() - started) * 1000)
                    finally:
                        ranking.completed = real  # type: ignore[assignment]
                kw = await core.keyword_branch(conn, corpus, text, where, params, depth)
                sem = await core.semantic_branch(conn, corpus, v, where, params, depth)
                have = {d for d, _ in sem}
                started = time.perf_counter()
                merged = await ranking.completed(conn, corpus, v, kw, sem, depth)
                step_ms.append((time.perf_counter() - started) * 1000)
                looked_up.append(sum(1 for d, _ in kw if d not in have))
                ranked.append(sum(1 for d, _ in merged if d not in have))
    return {
        "queries": len(texts),
        "hybrid_with_completion": common.percentiles(arms["with"]),
        "hybrid_without_completion": common.percentiles(arms["without"]),
        "completion_step": common.percentiles(step_ms),
        "keyword_candidates_looked_up_mean": round(statistics.fmean(looked_up), 1),
        "ranked_by_completion_mean": round(statistics.fmean(ranked), 2),
        "searches_with_a_clip_ranked_by_completion": sum(1 for r in ranked if r),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--space", default="hv")
    parser.add_argument("--name", default="search_completion")
    args = parser.parse_args()
    with common.postgres(keep=args.keep) as url:
        texts = queries_from(url, args.queries)
        result = asyncio.run(measure(url, args.space, texts))
    result["command"] = "python -m bench.search_completion " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items()
    )
    print(result)
    with contextlib.suppress(KeyboardInterrupt):
        common.save(args.name, result)


if __name__ == "__main__":
    main()
