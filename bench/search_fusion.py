"""How hybrid quality depends on the fusion settings, on a BEIR dataset already prepared by
``clipembed eval beir DIR`` (tables and embeddings in DATABASE_URL, query vectors in the cache).

Each branch's top ``window`` is fetched once per query with the product's SQL; RRF is then
recomputed in Python for every setting (the same pure :func:`clipembed.search.ranking.fuse`), so
the sweep costs seconds. Queries are also split in two halves (odd and even position) to show
whether a setting that wins on one half wins on the other: a default tuned on one dataset
should not be a coin flip.

    python -m bench.search_fusion ../shared/data/scifact [--window 200]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from clipembed import runtime, settings
from clipembed.eval import beir
from clipembed.search import core, ranking

KEYWORD_WEIGHTS = (0.5, 0.7, 0.8, 1.0, 1.2, 1.3, 1.5, 2.0)
RRF_KS = (10, 30, 60, 100)


async def branches(directory: Path, window: int) -> tuple[beir.Dataset, dict[str, Any]]:
    data = beir.load(directory)
    corpus = beir.corpus_for(data.name)
    cfg = settings.Settings()
    out: dict[str, Any] = {}
    async with runtime.open_runtime(cfg) as rt:
        svc = rt.require_service()
        qids = sorted(data.queries)
        vectors = (await svc.embed([data.queries[q] for q in qids])).vectors
        params = core.Params(window=window)
        async with rt.pool.connection() as conn:
            for q, vector in zip(qids, vectors, strict=True):
                kw = await core.keyword_branch(
                    conn, corpus, data.queries[q], core.no_filters(), params, window
                )
                sem = await core.semantic_branch(
                    conn, corpus, vector, core.no_filters(), params, window
                )
                out[q] = (kw, sem)
    return data, out


def ndcg(data: beir.Dataset, lists: dict[str, Any], params: core.Params, qids: list[str]) -> float:
    total = 0.0
    for q in qids:
        kw, sem = lists[q]
        hits = ranking.fuse(kw, sem, params)
        total += beir.ndcg_at([str(h.id) for h in hits], data.qrels[q], 10)
    return round(total / len(qids), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--window", type=int, default=core.DEFAULT_WINDOW)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    data, lists = asyncio.run(branches(args.directory, args.window))
    qids = sorted(lists)
    halves = {"odd": qids[0::2], "even": qids[1::2]}
    base = core.Params(limit=10, offset=0, window=args.window)
    report: dict[str, Any] = {
        "dataset": data.name,
        "queries": len(qids),
        "window": args.window,
        "keyword": ndcg(data, lists, dataclasses.replace(base, mode="keyword"), qids),
        "semantic": ndcg(data, lists, dataclasses.replace(base, mode="semantic"), qids),
        "hybrid_by_keyword_weight": {},
        "hybrid_by_rrf_k": {},
    }
    for w in KEYWORD_WEIGHTS:
        p = dataclasses.replace(base, keyword_weight=w, semantic_weight=1.0)
        report["hybrid_by_keyword_weight"][str(w)] = {
            "all": ndcg(data, lists, p, qids),
            **{name: ndcg(data, lists, p, part) for name, part in halves.items()},
        }
    for k in RRF_KS:
        p = dataclasses.replace(base, rrf_k=k)
        report["hybrid_by_rrf_k"][str(k)] = ndcg(data, lists, p, qids)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
