"""HNSW recall@10 against exact search on real embeddings: a BEIR dataset prepared by
``clipembed eval beir DIR`` (documents embedded, index built), probed with its real query
vectors — the honest middle between clustered synthetic vectors (easy) and uniform random
ones (no neighbourhood structure at all), see bench/search_speed.py.

    python -m bench.search_recall_real ../shared/data/scifact [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from psycopg import sql

from clipembed import runtime, settings
from clipembed.eval import beir
from clipembed.search import core

EF_SEARCH = (10, 20, 40, 64, 100)
K = 10


async def run(directory: Path) -> dict[str, Any]:
    data = beir.load(directory)
    corpus = beir.corpus_for(data.name)
    qids = sorted(data.queries)
    async with runtime.open_runtime(settings.Settings()) as rt:
        svc = rt.require_service()
        vectors = (await svc.embed([data.queries[q] for q in qids])).vectors
        async with rt.pool.connection() as conn:
            exact = []
            exact_sql = sql.SQL(
                "SELECT id FROM {} WHERE embedding IS NOT NULL ORDER BY embedding <=> %s LIMIT %s"
            ).format(sql.Identifier(corpus.table))
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_indexscan = off")  # a true exact scan
                for v in vectors:
                    cur = await conn.execute(exact_sql, (v, K))
                    exact.append({r[0] for r in await cur.fetchall()})
            recall = {}
            for ef in EF_SEARCH:
                got = []
                for v, truth in zip(vectors, exact, strict=True):
                    hits = await core.semantic_branch(
                        conn, corpus, v, core.no_filters(), core.Params(ef_search=ef), K
                    )
                    got.append(len(truth & {h[0] for h in hits}) / K)
                recall[f"ef_search={ef}"] = round(sum(got) / len(got), 4)
    return {
        "dataset": data.name,
        "documents": len(data.corpus),
        "probes": f"{len(qids)} real query vectors ({svc.model})",
        f"recall@{K}": recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args.directory))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
