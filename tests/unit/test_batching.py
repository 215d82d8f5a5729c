from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.embedding.batching import plan_batches


@pytest.mark.parametrize(
    ("counts", "max_inputs", "max_tokens", "expected"),
    [
        ([], 100, 1000, []),
        ([1, 1, 1], 2, 1000, [[0, 1], [2]]),
        ([5, 5, 5], 100, 10, [[0, 1], [2]]),
        ([10, 1, 10], 100, 10, [[0], [1], [2]]),
        ([3, 3, 3, 3], 3, 7, [[0, 1], [2, 3]]),
        ([0, 0, 0], 2, 1, [[0, 1], [2]]),
    ],
)
def test_table(counts, max_inputs, max_tokens, expected):
    assert plan_batches(counts, max_inputs=max_inputs, max_tokens=max_tokens) == expected


def test_input_over_the_request_limit_is_an_error():
    with pytest.raises(ValueError, match="more than 10"):
        plan_batches([11], max_inputs=5, max_tokens=10)


@given(
    counts=st.lists(st.integers(min_value=0, max_value=500), max_size=300),
    max_inputs=st.integers(min_value=1, max_value=50),
    max_tokens=st.integers(min_value=500, max_value=5000),
)
def test_properties(counts, max_inputs, max_tokens):
    batches = plan_batches(counts, max_inputs=max_inputs, max_tokens=max_tokens)
    flat = [i for b in batches for i in b]
    assert flat == list(range(len(counts)))  # every input exactly once, order kept
    for batch in batches:
        assert 1 <= len(batch) <= max_inputs
        assert sum(counts[i] for i in batch) <= max_tokens
    # greedy packing: a batch is only closed when the next input would not fit
    for current, following in itertools.pairwise(batches):
        nxt = counts[following[0]]
        assert len(current) == max_inputs or sum(counts[i] for i in current) + nxt > max_tokens


@given(
    counts=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=50),
    max_tokens=st.integers(min_value=1, max_value=100),
    data=st.data(),
)
def test_an_input_alone_over_the_token_limit_is_refused_not_dropped(counts, max_tokens, data):
    position = data.draw(st.integers(min_value=0, max_value=len(counts) - 1))
    counts = [min(c, max_tokens) for c in counts]
    counts[position] = max_tokens + data.draw(st.integers(min_value=1, max_value=1000))
    with pytest.raises(ValueError, match=f"input {position} has"):
        plan_batches(counts, max_inputs=10, max_tokens=max_tokens)


@pytest.mark.parametrize(
    ("counts", "max_inputs", "max_tokens"),
    [([1], 0, 10), ([1], 1, 0), ([1, -1], 5, 10)],
)
def test_impossible_limits_and_counts_are_errors(counts, max_inputs, max_tokens):
    with pytest.raises(ValueError):
        plan_batches(counts, max_inputs=max_inputs, max_tokens=max_tokens)


def test_openai_sized_request():
    """2,048 inputs and 300,000 tokens: the real API's limits, both binding in turn."""
    batches = plan_batches([100] * 5000, max_inputs=2048, max_tokens=300_000)
    assert [len(b) for b in batches] == [2048, 2048, 904]
    batches = plan_batches([8191] * 100, max_inputs=2048, max_tokens=300_000)
    assert [len(b) for b in batches] == [36, 36, 28]
