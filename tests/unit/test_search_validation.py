"""Request validation and filter SQL for the clips corpus, and the eval verdict: pure."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from clipembed.eval import beir, metrics
from clipembed.search import clips as clip_search
from clipembed.search import core


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (core.Params(mode="fuzzy"), "unknown mode"),  # type: ignore[arg-type]
        (core.Params(limit=0), "limit"),
        (core.Params(limit=101), "limit"),
        (core.Params(offset=-1), "offset"),
        (core.Params(limit=100, offset=101), r"offset \+ limit must be at most 200"),
    ],
)
def test_bad_parameters_are_refused_with_a_reason(params, message):
    with pytest.raises(clip_search.InvalidQuery, match=message):
        clip_search.check_params(params)


def test_the_last_page_of_the_window_is_allowed():
    clip_search.check_params(core.Params(limit=100, offset=100, window=200))


@pytest.mark.parametrize("query", ["", "   ", "\x00\x01", "\u200b\u200b", None])
def test_empty_queries_are_refused(query):
    with pytest.raises(clip_search.InvalidQuery, match="empty"):
        clip_search.clean_query(query, required=True)


@given(st.text(max_size=600))
def test_clean_query_returns_sendable_text_or_refuses(text):
    try:
        out = clip_search.clean_query(text, required=True)
    except clip_search.InvalidQuery as exc:
        assert "empty" in str(exc) or "longer than 500" in str(exc)
        return
    assert out and len(out) <= clip_search.MAX_QUERY_CHARS
    assert "\x00" not in out and out == out.strip()


def test_filters_are_parameters_and_nsfw_is_excluded_by_default():
    where, args = clip_search.Filters().where()
    assert "is_nsfw" in where.as_string(None) and args == {}
    where, args = clip_search.Filters(include_nsfw=True).where()
    assert where.as_string(None) == "TRUE" and args == {}
    hostile = "'; DROP TABLE clips;--"
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    where, args = clip_search.Filters(
        game=hostile,
        broadcaster="s1mple\x00",
        language="en",
        created_from=when,
        created_to=when + dt.timedelta(days=1),
    ).where()
    text = where.as_string(None)
    assert hostile not in text and "DROP" not in text  # values never become SQL text
    assert args["f_game"] == hostile and args["f_broadcaster"] == "s1mple"  # NUL removed
    assert args["f_from"] == when and "d.created_at < %(f_to)s" in text
    assert isinstance(where, sql.Composable)


def test_verdict_reads_hybrid_against_both_branches_and_the_reference():
    report = {
        "modes": {
            "keyword": {"ndcg@10": 0.69},
            "semantic": {"ndcg@10": 0.645},
            "hybrid": {"ndcg@10": 0.72},
        },
        "reference": {"ndcg@10": 0.686},
    }
    assert beir.verdict(report) == {
        "hybrid_beats_keyword": True,
        "hybrid_beats_semantic": True,
        "hybrid_beats_reference_bm25": True,
        "keyword_minus_reference_bm25": 0.004,
    }
    report["modes"]["semantic"]["ndcg@10"] = 0.75
    assert beir.verdict(report)["hybrid_beats_semantic"] is False
    assert beir.verdict({"modes": {"keyword": {"ndcg@10": 0.5}}}) == {}


def test_judged_drops_the_query_itself_and_keeps_the_top_100():
    ranked = ["q7"] + [f"d{i}" for i in range(120)]
    out = metrics.judged("q7", ranked)
    assert out[0] == "d0" and len(out) == metrics.EVAL_DEPTH and "q7" not in out
    assert metrics.judged("q1", ["d1", "d2"]) == ["d1", "d2"]
