"""BM25 scoring: the formula, pure, shared by the SQL ranking's tests and documentation.

The SQL in :mod:`clipembed.search.core` computes exactly :func:`score` per (query term,
document); this module is the readable reference and what the unit tests check by hand.

- idf: Lucene's non-negative form ``ln(1 + (N - df + 0.5) / (df + 0.5))``.
- tf: field-weighted (BM25F-style): ``tf = sum(weight[f] * tf[f])``, and the document length
  ``dl = sum(weight[f] * len[f])``, normalised by the corpus average ``avgdl``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# Anserini's defaults (k1=0.9, b=0.4), robust across BEIR-style corpora; measured on SciFact in
# docs/benchmarks.md. Both are query-time parameters (``--k1``, ``--b``).
K1 = 0.9
B = 0.4


def idf(n_docs: int, df: int) -> float:
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


def term_score(tf: float, dl: float, avgdl: float, *, k1: float = K1, b: float = B) -> float:
    if tf <= 0:
        return 0.0
    norm = 1.0 - b + b * (dl / avgdl if avgdl > 0 else 1.0)
    return tf * (k1 + 1.0) / (tf + k1 * norm)


def score(
    query: Sequence[str],
    doc: Mapping[str, float],
    *,
    dl: float,
    avgdl: float,
    n_docs: int,
    df: Mapping[str, int],
    k1: float = K1,
    b: float = B,
) -> float:
    """BM25 of one document (term -> weighted tf) for a query (distinct terms, OR semantics)."""
    total = 0.0
    for term in dict.fromkeys(query):
        if term in doc and df.get(term, 0) > 0:
            total += idf(n_docs, df[term]) * term_score(doc[term], dl, avgdl, k1=k1, b=b)
    return total
