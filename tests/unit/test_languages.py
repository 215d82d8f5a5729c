"""Query script detection and CJK fusion weights (pure); known-item query building."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.eval import known_item
from clipembed.search import core, languages


@pytest.mark.parametrize(
    ("text", "cjk"),
    [
        ("ガチャ", True),
        ("서울에서", True),
        ("人質を取る GTA", True),
        ("人質 GTA", False),  # two CJK letters of five
        ("GTA ガ", False),  # one CJK letter of four
        ("insane clutch", False),
        ("🎮 123 !!", False),
        ("", False),
    ],
)
def test_cjk_queries(text, cjk):
    assert languages.is_cjk_query(text) is cjk


def test_an_english_model_mostly_mutes_its_semantic_branch_for_cjk_queries():
    params = core.Params()
    muted = languages.fusion_for("変装", params, multilingual=False)
    assert muted.semantic_weight == pytest.approx(params.semantic_weight * 0.15)
    assert muted.keyword_weight == params.keyword_weight
    assert languages.fusion_for("変装", params, multilingual=True) == params
    assert languages.fusion_for("insane clutch", params, multilingual=False) == params
    keyword = core.Params(mode="keyword")
    assert languages.fusion_for("変装", keyword, multilingual=False) == keyword


@given(st.text(max_size=200))
def test_any_text_has_a_share_between_0_and_1(text):
    assert 0.0 <= languages.cjk_share(text) <= 1.0
    languages.fusion_for(text, core.Params(), multilingual=False)


def doc(title, language="ja", i="1"):
    return known_item.Doc(i, title, "b", "b", None, language)


def test_cjk_candidates_are_script_runs_inside_the_title():
    words = known_item.candidates(doc("貰ったガチャでSRを出したとと"))
    assert "ガチャ" in words and "貰" not in words  # one character is not a word
    assert all(len(w) >= 2 for w in words)
    assert "とと" not in words  # hiragana runs are particles and endings


def test_inflected_queries_keep_the_stem():
    pytest.importorskip("Stemmer")
    form = known_item.inflect("carreras", "es")
    assert form is not None and form != "carreras"
    assert known_item.inflect("carreras", "xx") is None


def test_queries_are_reproducible_and_skip_ambiguous_words():
    docs = [doc(f"共通ワード{i}番", i=str(i)) for i in range(8)] + [doc("珍しい変装", i="x")]
    first = known_item.build_queries(docs, seed=3)
    assert first == known_item.build_queries(docs, seed=3)
    assert all(q.text != "共通ワード" for q in first)  # in 8 titles: cannot identify one
    assert any(q.doc_id == "x" for q in first)
