"""BM25 scoring: hand-computed values and the properties that make it BM25 (not ts_rank)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.search import bm25

counts = st.integers(min_value=1, max_value=10_000)
k1s = st.floats(min_value=0.1, max_value=3.0)
bs = st.floats(min_value=0.0, max_value=1.0)
lengths = st.floats(min_value=0.5, max_value=1_000.0)


@pytest.mark.parametrize(
    ("n", "df", "expected"),
    [
        (3, 1, math.log(1 + 2.5 / 1.5)),  # rare term
        (1000, 1, math.log(1 + 999.5 / 1.5)),
        (10, 10, math.log(1 + 0.5 / 10.5)),  # in every document: small but never negative
    ],
)
def test_idf_table(n, df, expected):
    assert bm25.idf(n, df) == pytest.approx(expected)


def test_two_document_example_by_hand():
    """N=2 documents of length 3 (avgdl 3): doc1 has clutch x2 and ace x1, doc2 ace x1.

    k1=1.2, b=0.75; query 'clutch ace':
    idf(clutch, df 1) = ln(1 + 1.5/1.5) = ln 2; idf(ace, df 2) = ln(1 + 0.5/2.5) = ln 1.2
    doc1: norm = 1 - 0.75 + 0.75*3/3 = 1
          clutch: 2*2.2/(2 + 1.2) = 1.375; ace: 1*2.2/(1 + 1.2) = 1
          score = 1.375 ln 2 + ln 1.2
    """
    df = {"clutch": 1, "ace": 2}
    doc1 = bm25.score(
        ["clutch", "ace"], {"clutch": 2, "ace": 1}, dl=3, avgdl=3, n_docs=2, df=df, k1=1.2, b=0.75
    )
    assert doc1 == pytest.approx(1.375 * math.log(2) + math.log(1.2))
    # doc2: OR semantics, one matching term is enough
    doc2 = bm25.score(["clutch", "ace"], {"ace": 1}, dl=3, avgdl=3, n_docs=2, df=df, k1=1.2, b=0.75)
    assert doc2 == pytest.approx(math.log(1.2))
    assert doc1 > doc2 > 0


@given(n=counts, df1=counts, df2=counts)
def test_idf_is_positive_and_falls_as_the_term_gets_common(n, df1, df2):
    df1, df2 = min(df1, n), min(df2, n)
    assert bm25.idf(n, df1) > 0
    if df1 < df2:
        assert bm25.idf(n, df1) > bm25.idf(n, df2)


@given(tf=st.floats(min_value=0.01, max_value=1e4), dl=lengths, avgdl=lengths, k1=k1s, b=bs)
def test_term_score_saturates_below_k1_plus_1(tf, dl, avgdl, k1, b):
    s = bm25.term_score(tf, dl, avgdl, k1=k1, b=b)
    assert 0 < s < k1 + 1 + 1e-9
    assert bm25.term_score(tf * 2, dl, avgdl, k1=k1, b=b) >= s  # more occurrences never hurt


@given(tf=st.floats(min_value=0.01, max_value=100), dl=lengths, avgdl=lengths, k1=k1s)
def test_longer_documents_score_lower_unless_b_is_zero(tf, dl, avgdl, k1):
    short = bm25.term_score(tf, dl, avgdl, k1=k1, b=0.75)
    long = bm25.term_score(tf, dl * 2, avgdl, k1=k1, b=0.75)
    assert long < short
    assert bm25.term_score(tf, dl, avgdl, k1=k1, b=0.0) == pytest.approx(
        bm25.term_score(tf, dl * 2, avgdl, k1=k1, b=0.0)
    )


@given(
    terms=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=8),
    tfs=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 20), min_size=1),
)
def test_score_is_a_sum_over_distinct_query_terms(terms, tfs):
    df = {"a": 1, "b": 5, "c": 50}
    kwargs = {"dl": 10.0, "avgdl": 8.0, "n_docs": 100, "df": df}
    total = bm25.score(terms, tfs, **kwargs)
    parts = sum(bm25.score([t], tfs, **kwargs) for t in set(terms))
    assert total == pytest.approx(parts)
    assert bm25.score(terms + terms, tfs, **kwargs) == pytest.approx(total)  # repeats ignored
    assert bm25.score(["zzz"], tfs, **kwargs) == 0.0  # a term no document has adds nothing


def test_zero_tf_and_empty_corpus_statistics():
    assert bm25.term_score(0, 5, 5) == 0.0
    assert bm25.term_score(1, 5, 0) > 0  # avgdl 0 (empty corpus) does not divide by zero
