"""Fusion and BM25 against hand-computed numbers; the page cut of the ranking."""

from __future__ import annotations

import math

import pytest

from clipembed.search import bm25, core, fusion


def test_rrf_hand_computed():
    fused = fusion.rrf({"keyword": ["a", "b", "c"], "semantic": ["c", "a", "d"]}, k=60)
    scores = {f.id: f.score for f in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [f.id for f in fused] == ["a", "c", "b", "d"]
    assert fused[0].ranks == {"keyword": 1, "semantic": 2}


def test_rrf_weights_and_deterministic_ties():
    fused = fusion.rrf({"keyword": ["x"], "semantic": ["y"]}, k=60, weights={"keyword": 2.0})
    assert [f.id for f in fused] == ["x", "y"]
    tie = fusion.rrf({"keyword": ["b"], "semantic": ["a"]}, k=60)
    assert [f.id for f in tie] == ["a", "b"]  # equal scores: by id


def test_bm25_hand_computed():
    # N=3 documents, the term appears in 1: idf = ln(1 + (3 - 1 + 0.5)/(1 + 0.5)) = ln(8/3)
    assert bm25.idf(3, 1) == pytest.approx(math.log(8 / 3))
    # tf=2, dl=4, avgdl=4, k1=1.2, b=0.75: 2*2.2/(2+1.2) = 1.375
    assert bm25.term_score(2, 4, 4, k1=1.2, b=0.75) == pytest.approx(1.375)
    # longer than average documents score lower; saturation: tf 10 is not 5x tf 2
    assert bm25.term_score(2, 8, 4) < bm25.term_score(2, 4, 4)
    assert bm25.term_score(10, 4, 4) < 5 * bm25.term_score(2, 4, 4)
    s = bm25.score(
        ["clutch", "ace", "clutch"],
        {"clutch": 2, "x": 2},
        dl=4,
        avgdl=4,
        n_docs=3,
        df={"clutch": 1},
        k1=1.2,
        b=0.75,
    )
    assert s == pytest.approx(math.log(8 / 3) * 1.375)


def test_fuse_pages_are_slices_of_one_ranking():
    keyword = [(f"k{i}", 10.0 - i) for i in range(30)]
    semantic = [(f"k{i}", 0.9 - i / 100) for i in range(0, 30, 2)] + [
        (f"s{i}", 0.5) for i in range(20)
    ]
    full = core.fuse(keyword, semantic, core.Params(limit=100, offset=0, window=200))
    pages = [
        core.fuse(keyword, semantic, core.Params(limit=7, offset=o, window=200))
        for o in range(0, 70, 7)
    ]
    flat = [h.id for page in pages for h in page]
    assert flat == [h.id for h in full][: len(flat)]
    assert len(flat) == len(set(flat))
    assert [h.rank for page in pages for h in page] == list(range(1, len(flat) + 1))
    top = full[0]
    assert top.keyword_rank == 1 and top.semantic_rank == 1


def test_one_branch_fetches_the_page_and_fusion_the_window():
    from clipembed.search import core

    assert core.branch_depth(core.Params(mode="hybrid", limit=20, offset=40)) == core.DEFAULT_WINDOW
    assert core.branch_depth(core.Params(mode="semantic", limit=20, offset=40)) == 60
    assert core.branch_depth(core.Params(mode="keyword", limit=5)) == 5
