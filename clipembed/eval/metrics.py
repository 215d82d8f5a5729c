"""The retrieval metrics BEIR reports (pure): nDCG@k, recall@k, and the ranking BEIR judges.

Shared by the evaluation harness (:mod:`.beir`) and the reference BM25 (:mod:`.reference`), so
neither imports the other for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (trec_eval / pytrec_eval, as BEIR reports)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 100) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


EVAL_DEPTH = 100  # documents ranked per query: recall@100 needs the top 100


def judged(query_id: str, ranked: Sequence[str]) -> list[str]:
    """The ranking as BEIR scores it: the query's own id removed, cut at EVAL_DEPTH.

    BEIR's evaluator ignores identical ids by default (``ignore_identical_ids=True``): in
    ArguAna, for one, every query is also a corpus document and would rank first in every
    system while never being judged relevant. Elsewhere query and document ids do not meet.
    """
    return [d for d in ranked if d != query_id][:EVAL_DEPTH]
