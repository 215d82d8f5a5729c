"""Fusion and BM25 against hand-computed numbers; the page cut of the ranking."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.search import bm25, core, fusion, ranking, statistics


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
    full = ranking.fuse(keyword, semantic, core.Params(limit=100, offset=0, window=200))
    pages = [
        ranking.fuse(keyword, semantic, core.Params(limit=7, offset=o, window=200))
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

    assert (
        ranking.branch_depth(core.Params(mode="hybrid", limit=20, offset=40)) == core.DEFAULT_WINDOW
    )
    assert ranking.branch_depth(core.Params(mode="semantic", limit=20, offset=40)) == 60
    assert ranking.branch_depth(core.Params(mode="keyword", limit=5)) == 5


def test_very_common_lexemes_are_dropped_while_a_rarer_one_remains():
    counts = {"stream": 6, "highlight": 6, "unicorn": 1, "unikorn": 0}
    assert statistics.without_very_common(counts, cap=6, n_docs=31) == ["unicorn"]
    # only very common words: all kept; a variant no document has never is
    assert statistics.without_very_common({"stream": 6, "strea": 0}, cap=6, n_docs=31) == ["stream"]
    # a corpus smaller than the cap: nothing is very common
    assert statistics.without_very_common({"a": 6, "b": 1}, cap=50, n_docs=31) == ["a", "b"]
    assert statistics.without_very_common({}, cap=6, n_docs=31) == []


@given(
    st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 100), max_size=8),
    st.integers(1, 100),
    st.integers(1, 200),
)
def test_very_common_rule_properties(counts, cap, n_docs):
    kept = statistics.without_very_common(counts, cap=cap, n_docs=n_docs)
    present = [x for x, c in counts.items() if c > 0]
    assert kept == [x for x in present if x in kept]  # a subsequence, in the query's order
    assert bool(kept) == bool(present)  # a query with postings is never left without terms
    if cap < n_docs and any(counts[x] < cap for x in present):
        assert all(counts[x] < cap for x in kept)
    else:
        assert kept == present


def test_modes_are_parsed_once_with_one_message():
    assert [core.parse_mode(m) for m in core.MODES] == ["hybrid", "keyword", "semantic"]
    for bad in ("Hybrid", "", "vector", "keyword "):
        with pytest.raises(ValueError, match="use hybrid, keyword or semantic"):
            core.parse_mode(bad)


def test_complete_takes_in_what_the_index_missed_and_nothing_below_its_window():
    semantic = [("a", 0.9), ("c", 0.7), ("d", 0.6)]  # the index missed "b" (0.8)
    scored = [("b", 0.8), ("z", 0.1), ("a", 0.9)]
    assert ranking.complete(semantic, scored, 3) == [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    # a full list: a document below its last stays beyond the window
    assert ranking.complete(semantic, [("z", 0.1)], 3) == semantic
    # a short list (the walk ran out): every scored document belongs
    assert ranking.complete(semantic, [("z", 0.1)], 5) == [*semantic, ("z", 0.1)]
    assert ranking.complete([], [("z", 0.1)], 5) == [("z", 0.1)]


@given(
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=40, unique=True),
    st.integers(1, 20),
    st.data(),
)
def test_complete_restores_the_exact_top_n(sims, n, data):
    """The index returned the true order with some of the top n missing (and so reached
    further down); the keyword branch found the missing ones among others: the completed list is
    the true top n."""
    order = sorted(range(len(sims)), key=lambda i: -sims[i])
    top = order[: min(n, len(order))]
    missed = set(data.draw(st.lists(st.sampled_from(top), unique=True)))
    semantic = [(i, sims[i]) for i in order[: n + len(missed)] if i not in missed][:n]
    others = data.draw(st.lists(st.sampled_from(order), max_size=10))
    scored = [(i, sims[i]) for i in [*missed, *others]]
    assert ranking.complete(semantic, scored, n) == [(i, sims[i]) for i in top]


@given(
    st.floats(0.01, 20),
    st.lists(st.integers(0, 50), min_size=4, max_size=4),
    st.lists(st.integers(0, 400), min_size=4, max_size=4),
    st.floats(0.0, 3.0),
    st.floats(0.0, 1.0),
    st.one_of(st.just(0.0), st.floats(0.5, 200.0)),  # an average length: 0 (empty) or a real one
)
def test_folded_bm25_is_the_textbook_formula(idf, tfs, lens, k1, b, avgdl):
    """The ranking statement's folded form gives the score of :func:`bm25.term_score`."""
    weights = (2.0, 1.0, 0.5, 1.0)
    folded = bm25.folded(weights, k1=k1, b=b, avgdl=avgdl)
    tf = sum(w * x for w, x in zip(weights, tfs, strict=True))
    dl = sum(w * x for w, x in zip(weights, lens, strict=True))
    textbook = idf * bm25.term_score(tf, dl, avgdl, k1=k1, b=b)
    assert folded.posting(idf, tfs, lens) == pytest.approx(textbook, rel=1e-9, abs=1e-12)
    assert set(folded.statement_params()) == {"wa", "wb", "wc", "wd", "n0", "la", "lb", "lc", "ld"}


def test_frequency_cache_answers_only_what_it_knows():
    cache = statistics.FrequencyCache(ttl=60.0, size=2)
    cache.put("db/t", "chat", 5_000, False, now=0.0)  # counted up to a cap of 5,000: at least
    assert cache.get("db/t", "chat", 5_000, now=1.0) == (5_000, False)
    assert cache.get("db/t", "chat", 4_000, now=1.0) == (5_000, False)  # very common either way
    assert cache.get("db/t", "chat", 6_000, now=1.0) is None  # a higher cap: unknown
    assert cache.get("db/t", "chat", 5_000, now=60.0) is None  # expired
    assert cache.get("other/t", "chat", 5_000, now=1.0) is None  # another database or table
    cache.put("db/t", "goe", 1_200, True, now=0.0)
    assert cache.get("db/t", "goe", 10**9, now=1.0) == (1_200, True)  # exact: any cap
    cache.put("db/t", "wild", 1_300, True, now=0.0)  # past its size: the oldest goes
    assert cache.get("db/t", "chat", 5_000, now=1.0) is None
    assert len(cache.entries) == 2
