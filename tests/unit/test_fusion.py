"""Reciprocal rank fusion and the page cut: hand-computed values and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.search import core, fusion, ranking

ids = st.lists(st.integers(0, 60), unique=True, max_size=40)


def test_weighted_rrf_by_hand():
    # keyword weight 1.3, semantic 1.0, k=60
    fused = fusion.rrf(
        {"keyword": ["a", "b"], "semantic": ["b", "c"]},
        k=60,
        weights={"keyword": 1.3, "semantic": 1.0},
    )
    scores = {f.id: f.score for f in fused}
    assert scores["a"] == pytest.approx(1.3 / 61)
    assert scores["b"] == pytest.approx(1.3 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 62)
    assert [f.id for f in fused] == ["b", "a", "c"]
    assert fused[0].ranks == {"keyword": 2, "semantic": 1}


@given(keyword=ids, semantic=ids, k=st.integers(1, 100))
def test_rrf_lists_every_id_once_best_first(keyword, semantic, k):
    fused = fusion.rrf({"keyword": keyword, "semantic": semantic}, k=k)
    assert sorted(f.id for f in fused) == sorted(set(keyword) | set(semantic))
    scores = [f.score for f in fused]
    assert scores == sorted(scores, reverse=True)
    for f in fused:
        expected = sum(1 / (k + r) for r in f.ranks.values())
        assert f.score == pytest.approx(expected)
        for branch, rank in f.ranks.items():
            assert {"keyword": keyword, "semantic": semantic}[branch][rank - 1] == f.id


@given(keyword=ids, semantic=ids)
def test_rrf_is_deterministic_and_branch_order_free(keyword, semantic):
    a = fusion.rrf({"keyword": keyword, "semantic": semantic})
    b = fusion.rrf({"semantic": semantic, "keyword": keyword})
    assert [(f.id, f.ranks) for f in a] == [(f.id, f.ranks) for f in b]


@given(keyword=ids, semantic=ids)
def test_a_document_in_both_branches_beats_one_at_the_same_rank_in_one(keyword, semantic):
    fused = {f.id: f for f in fusion.rrf({"keyword": keyword, "semantic": semantic})}
    for doc in set(keyword) & set(semantic):
        r = keyword.index(doc) + 1
        assert fused[doc].score > 1 / (60 + r)


@given(
    keyword=ids,
    semantic=ids,
    limit=st.integers(1, 15),
    mode=st.sampled_from(core.MODES),
)
def test_pages_tile_the_ranking_without_gaps_or_duplicates(keyword, semantic, limit, mode):
    kw = [(d, 100.0 - i) for i, d in enumerate(keyword)]
    sem = [(d, 1.0 - i / 100) for i, d in enumerate(semantic)]
    whole = ranking.fuse(kw, sem, core.Params(mode=mode, limit=200, offset=0, window=200))
    pages = []
    for offset in range(0, len(whole) + limit, limit):
        pages.extend(ranking.fuse(kw, sem, core.Params(mode=mode, limit=limit, offset=offset)))
    assert [h.id for h in pages] == [h.id for h in whole]
    assert [h.rank for h in pages] == list(range(1, len(whole) + 1))
    for h in whole:
        assert (h.keyword_rank is not None) == (h.id in keyword)
        assert (h.semantic_rank is not None) == (h.id in semantic)
