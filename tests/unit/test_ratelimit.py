"""The GCRA limiter's algorithm on a fake clock: no sleeping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clipembed.embedding.ratelimit import GcraState


def run(state: GcraState, costs: list[int], *, rpm: int, tpm: int) -> list[float]:
    """Send requests as soon as allowed; returns their send times in ms."""
    now = 0.0
    times = []
    for cost in costs:
        while True:
            wait = state.try_acquire(now, 60_000 / rpm, 60_000 / tpm, cost)
            if wait == 0:
                times.append(now)
                break
            now += wait
    return times


def test_requests_are_spread_evenly():
    times = run(GcraState(), [1] * 10, rpm=60, tpm=10**9)
    assert times == [i * 1000.0 for i in range(10)]


def test_tokens_bind_when_they_are_the_tighter_limit():
    times = run(GcraState(), [500] * 4, rpm=10_000, tpm=1000)  # 1000 tokens/min
    assert times == [0.0, 30_000.0, 60_000.0, 90_000.0]


def test_block_holds_everything_until_it_ends():
    state = GcraState()
    state.block(0.0, 5000)
    assert state.try_acquire(1000.0, 10, 1, 1) == 4000.0
    assert state.try_acquire(5000.0, 10, 1, 1) == 0.0


@given(
    costs=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=200),
    rpm=st.integers(min_value=1, max_value=600),
    tpm=st.integers(min_value=200, max_value=20_000),
)
def test_no_minute_holds_more_than_the_limit_plus_one_request(costs, rpm, tpm):
    times = run(GcraState(), costs, rpm=rpm, tpm=tpm)
    for i, start in enumerate(times):
        window = [j for j in range(i, len(times)) if times[j] < start + 60_000]
        assert len(window) <= rpm + 1
        assert sum(costs[j] for j in window) <= tpm + max(costs)
