"""Reciprocal rank fusion: pure, so it is unit-tested against hand-computed numbers.

RRF (Cormack et al., 2009) scores a document by ``sum(weight_b / (k + rank_b))`` over the
branches that returned it (ranks 1-based). It needs no score calibration between BM25 and
cosine similarity, which live on unrelated scales. Ties are broken by id so that the order —
and so pagination — is deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

RRF_K = 60


@dataclasses.dataclass(frozen=True, slots=True)
class Fused:
    id: Any
    score: float
    ranks: dict[str, int]  # branch -> 1-based rank in that branch


def rrf(
    branches: Mapping[str, Sequence[Hashable]],
    *,
    k: int = RRF_K,
    weights: Mapping[str, float] | None = None,
) -> list[Fused]:
    """Fuse ranked id lists; returns every id once, best first (ties by id)."""
    scores: dict[Any, float] = {}
    ranks: dict[Any, dict[str, int]] = {}
    for name, ids in branches.items():
        w = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, doc in enumerate(ids, start=1):
            if name in ranks.get(doc, {}):
                continue  # a branch lists each id once; ignore repeats
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
            ranks.setdefault(doc, {})[name] = rank
    ordered = sorted(scores, key=lambda d: (-scores[d], str(d)))
    return [Fused(d, scores[d], ranks[d]) for d in ordered]
