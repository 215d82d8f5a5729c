"""Recall and latency of a filtered HNSW scan per ``hnsw.max_scan_tuples`` at a million clips.

Runs on the database ``bench.million --keep DIR`` left (its halfvec space ``hv``): for one popular
and one median game (each ~2.6 % of the clips), the product's vector branch
(``core.semantic_branch`` with ``selective=True``, past ``filtered.EXACT_MAX``) against the same statement
with index scans off, for each value of ``filtered.MAX_SCAN_TUPLES``, asking for 10 and for
200 (a hybrid window).

    python -m bench.filtered_scan --keep /work/m1m [--tuples 20000,60000] [--queries 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector_async

from bench import common, million
from bench.million_search import recall_with_ties
from clipembed import spaces
from clipembed.search import clips as clip_search
from clipembed.search import core, filtered
from clipembed.testing.fakeopenai import vector_for

GAMES = ("Software and Game Development", "Fall Guys")


async def sweep(url: str, texts: list[str], tuples: list[int]) -> list[dict[str, Any]]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
    out = []
    async with conn:
        await register_vector_async(conn)
        await conn.execute("SET search_path = clipembed, public")
        corpus = clip_search.corpus_for(await spaces.by_name(conn, "hv"))
        for game in GAMES:
            where = clip_search.Filters(game=game).where()
            truths = {}
            for text in texts:
                v = vector_for(text, million.DIMS, "words")
                async with conn.transaction():
                    await conn.execute("SET LOCAL enable_indexscan = off")
                    truths[text] = await core.semantic_branch(
                        conn, corpus, v, where, core.Params(), 10
                    )
            for limit in tuples:
                filtered.MAX_SCAN_TUPLES = limit
                for n in (10, 200):
                    found, times = [], []
                    for text in texts:
                        v = vector_for(text, million.DIMS, "words")
                        t = time.perf_counter()
                        ann = await core.semantic_branch(
                            conn, corpus, v, where, core.Params(), n, selective=True
                        )
                        times.append((time.perf_counter() - t) * 1000)
                        found.append(recall_with_ties(truths[text], ann[:10]))
                    out.append(
                        {
                            "game": game,
                            "max_scan_tuples": limit,
                            "asked": n,
                            "recall_at_10_ties": round(statistics.fmean(found), 3),
                            **common.percentiles(times),
                        }
                    )
                    print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, required=True, help="bench.million's --keep DIR")
    parser.add_argument("--tuples", default="20000,60000")
    parser.add_argument("--queries", type=int, default=15)
    args = parser.parse_args()
    with common.postgres(args.keep) as url:
        texts = million.queries_from(url, 200)[: args.queries]
        rows = asyncio.run(sweep(url, texts, [int(x) for x in args.tuples.split(",")]))
    common.save("filtered_scan", {"queries": len(texts), "rows": rows})


if __name__ == "__main__":
    main()
