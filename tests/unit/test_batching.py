from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.batching import plan_batches


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
