"""tiktoken counting and cutting: a cut is a prefix, within budget, never a broken character."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipembed.embedding.providers import tokens

TOK = tokens.TiktokenTokenizer()


@pytest.mark.parametrize(
    ("text", "count"),
    [("", 0), ("hello", 1), ("hello world", 2), ("Title: Insane clutch!", 6)],
)
def test_count_table(text, count):
    assert TOK.count(text) == count


def test_count_many_matches_count_on_both_paths():
    short = ["a b c", "神プレイ 🔥", "Title: x. Game: y"] * 10
    long = ["word " * 3000] * 70  # over PARALLEL_MIN_CHARS: the threaded path
    assert sum(map(len, long)) > tokens.PARALLEL_MIN_CHARS
    for batch in (short, long):
        assert TOK.count_many(batch) == [TOK.count(t) for t in batch]


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=0, max_size=300), budget=st.integers(min_value=0, max_value=40))
def test_truncate_is_a_prefix_within_budget(text, budget):
    cut = TOK.truncate(text, budget)
    assert text.startswith(cut)
    assert TOK.count(cut) <= budget
    if TOK.count(text) <= budget:
        assert cut == text


def test_multibyte_text_is_cut_between_characters():
    text = "🔥神" * 5000
    cut = TOK.truncate(text, 8191)
    assert text.startswith(cut) and 0 < len(cut) < len(text)
    assert TOK.count(cut) <= 8191
