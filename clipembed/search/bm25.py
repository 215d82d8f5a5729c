"""BM25 scoring: the formula, pure, shared by the SQL ranking's tests and documentation.

The SQL in :mod:`clipembed.search.core` computes exactly :func:`score` per (query term,
document); this module is the readable reference and what the unit tests check by hand.

- idf: Lucene's non-negative form ``ln(1 + (N - df + 0.5) / (df + 0.5))``.
- tf: field-weighted (BM25F-style): ``tf = sum(weight[f] * tf[f])``, and the document length
  ``dl = sum(weight[f] * len[f])``, normalised by the corpus average ``avgdl``.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Folded:
    """BM25 of one posting in the form the ranking statement computes (pure)::

        idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
          = w * tf / (tf + n0 + sum(l[f] * len[f]))

    with ``w = idf * (k1 + 1)``, ``n0 = k1 * (1 - b)``, ``l[f] = weight[f] * k1 * b / avgdl``
    and ``tf = sum(weight[f] * tf[f])``: the constants are folded here once, so PostgreSQL
    evaluates two weighted sums and one division per posting instead of the textbook form's
    repeated terms (docs/benchmarks.md: 18 % less time on the heaviest queries at a million).
    """

    weights: tuple[float, float, float, float]  # tf weight per class (A, B, C, D)
    lengths: tuple[float, float, float, float]  # l[f]
    n0: float
    k1_plus_1: float

    def statement_params(self) -> dict[str, float]:
        wa, wb, wc, wd = self.weights
        la, lb, lc, ld = self.lengths
        return {
            "wa": wa,
            "wb": wb,
            "wc": wc,
            "wd": wd,
            "la": la,
            "lb": lb,
            "lc": lc,
            "ld": ld,
            "n0": self.n0,
        }

    def posting(self, idf: float, tfs: Sequence[float], lens: Sequence[float]) -> float:
        """One posting's score as the statement computes it (tests compare it to :func:`score`)."""
        tf = sum(w * x for w, x in zip(self.weights, tfs, strict=True))
        if tf <= 0:
            return 0.0
        norm = self.n0 + sum(w * x for w, x in zip(self.lengths, lens, strict=True))
        return idf * self.k1_plus_1 * tf / (tf + norm)


def folded(
    field_weights: tuple[float, float, float, float], *, k1: float, b: float, avgdl: float
) -> Folded:
    c = k1 * b / avgdl if avgdl > 0 else 0.0
    return Folded(
        weights=field_weights,
        lengths=(
            field_weights[0] * c,
            field_weights[1] * c,
            field_weights[2] * c,
            field_weights[3] * c,
        ),
        n0=k1 * (1.0 - b) + (k1 * b if avgdl <= 0 else 0.0),
        k1_plus_1=k1 + 1.0,
    )
