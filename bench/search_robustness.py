"""Does hybrid still beat both branches when one branch is much weaker than the other?

The acceptance check runs the harness on a benchmark we have not seen, where the gap between
BM25 and the embedding model may be far from SciFact's (+0.05 for BM25). Having one dataset,
we widen the gap on purpose and watch the margin of hybrid over the better branch:

- a weaker vector branch: Gaussian noise added to each query vector (then re-normalised);
- a weaker keyword branch: each query word dropped with probability p (fixed seed).

For each setting, RRF (k=60) with keyword weight 1.0 and the default is recomputed from the
same branch lists. Needs a dataset prepared by ``clipembed eval beir DIR`` in DATABASE_URL.

    python -m bench.search_robustness ../shared/data/scifact [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.search_fusion import ndcg
from clipembed import runtime, settings
from clipembed.eval import beir
from clipembed.search import core

VECTOR_NOISE = (0.0, 0.04, 0.08, 0.12, 0.16)  # per-dimension sigma (384 dims, unit vectors)
WORD_DROP = (0.0, 0.2, 0.35, 0.5, 0.65)
WINDOW = core.DEFAULT_WINDOW


def _drop_words(text: str, p: float, rng: np.random.Generator) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept) or words[0]


async def run(directory: Path) -> dict[str, Any]:
    data = beir.load(directory)
    corpus = beir.corpus_for(data.name)
    qids = sorted(data.queries)
    params = core.Params(window=WINDOW)
    default_weight = core.Params.keyword_weight
    rows: list[dict[str, Any]] = []
    async with runtime.open_runtime(settings.Settings()) as rt:
        svc = rt.require_service()
        clean = (await svc.embed([data.queries[q] for q in qids])).vectors
        async with rt.pool.connection() as conn:

            async def keyword(texts: dict[str, str]) -> dict[str, Any]:
                return {
                    q: await core.keyword_branch(
                        conn, corpus, texts[q], core.no_filters(), params, WINDOW
                    )
                    for q in qids
                }

            async def semantic(vectors: np.ndarray) -> dict[str, Any]:
                return {
                    q: await core.semantic_branch(
                        conn, corpus, v, core.no_filters(), params, WINDOW
                    )
                    for q, v in zip(qids, vectors, strict=True)
                }

            base_kw = await keyword(data.queries)
            base_sem = await semantic(clean)
            settings_list: list[tuple[str, float, dict[str, Any], dict[str, Any]]] = []
            for sigma in VECTOR_NOISE:
                rng = np.random.default_rng(1)
                noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
                noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
                sem = base_sem if sigma == 0 else await semantic(noisy)
                settings_list.append(("vector_noise", sigma, base_kw, sem))
            for p in WORD_DROP[1:]:
                rng = np.random.default_rng(2)
                texts = {q: _drop_words(data.queries[q], p, rng) for q in qids}
                settings_list.append(("word_drop", p, await keyword(texts), base_sem))
    for kind, level, kw, sem in settings_list:
        lists = {q: (kw[q], sem[q]) for q in qids}
        base = core.Params(limit=10, offset=0, window=WINDOW)
        row: dict[str, Any] = {
            "degraded": kind,
            "level": level,
            "keyword": ndcg(data, lists, dataclasses.replace(base, mode="keyword"), qids),
            "semantic": ndcg(data, lists, dataclasses.replace(base, mode="semantic"), qids),
        }
        for w in (1.0, default_weight):
            p = dataclasses.replace(base, keyword_weight=w)
            row[f"hybrid_w{w}"] = ndcg(data, lists, p, qids)
        best = max(row["keyword"], row["semantic"])
        row["margin_w1.0"] = round(row["hybrid_w1.0"] - best, 4)
        row[f"margin_w{default_weight}"] = round(row[f"hybrid_w{default_weight}"] - best, 4)
        rows.append(row)
    return {"dataset": data.name, "queries": len(qids), "rows": rows}


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
