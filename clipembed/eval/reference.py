"""An independent reference for the keyword branch: bm25s (Lucene's BM25) on the same files.

The SQL keyword branch is always judged against a second implementation computed in the same
run on the same documents and queries. bm25s and PyStemmer are the ``eval`` extra, never a
runtime dependency: nothing outside :mod:`clipembed.eval` imports them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from clipembed.eval.metrics import EVAL_DEPTH, judged, ndcg_at, recall_at

if TYPE_CHECKING:
    from clipembed.eval.beir import Dataset

MISSING = (
    "bm25s is not installed: install the eval extra (pip install 'clipembed[eval]') "
    "to compare with the reference BM25"
)

REFERENCE_K1 = 1.5  # bm25s's (and Lucene's classic) defaults: the reference is used as shipped
REFERENCE_B = 0.75


def reference_bm25(data: Dataset) -> dict[str, Any]:
    """nDCG@10 and recall@100 of bm25s on the same documents (``title + " " + text``) and queries.

    bm25s comes with the ``eval`` extra (``pip install 'clipembed[eval]'``): without it the
    report says so, with that command, instead of failing the evaluation. PyStemmer, when installed, gives it the Snowball English stemmer (PostgreSQL's
    ``english`` configuration uses the same algorithm), which is how the published 0.686 on
    SciFact was measured; without it the reference runs unstemmed and the report says that too.
    """
    try:
        import bm25s
    except ImportError:
        return {"error": MISSING}
    stemmer: Any = None
    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        pass
    t = time.monotonic()
    ids = list(data.corpus)
    texts = [f"{title} {text}".strip() for title, text in data.corpus.values()]
    qids = sorted(data.queries)
    options: dict[str, Any] = {"stopwords": "en", "stemmer": stemmer, "show_progress": False}
    retriever = bm25s.BM25(k1=REFERENCE_K1, b=REFERENCE_B)
    retriever.index(bm25s.tokenize(texts, **options), show_progress=False)
    query_tokens = bm25s.tokenize([data.queries[q] for q in qids], **options)
    found, scores = retriever.retrieve(
        query_tokens, k=min(EVAL_DEPTH + 1, len(ids)), show_progress=False, n_threads=1
    )
    ndcg, recall = [], []
    for row, row_scores, q in zip(found, scores, qids, strict=True):
        # a score of 0 matched no query term: not retrieved (bm25s pads the list with them)
        ranked = judged(q, [ids[int(j)] for j, x in zip(row, row_scores, strict=True) if x > 0])
        ndcg.append(ndcg_at(ranked, data.qrels[q], 10))
        recall.append(recall_at(ranked, data.qrels[q], 100))
    return {
        "ndcg@10": round(sum(ndcg) / len(ndcg), 4) if ndcg else 0.0,
        "recall@100": round(sum(recall) / len(recall), 4) if recall else 0.0,
        "seconds": round(time.monotonic() - t, 2),
        "k1": REFERENCE_K1,
        "b": REFERENCE_B,
        "stemmer": "snowball english" if stemmer is not None else None,
    }
