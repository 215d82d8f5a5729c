"""The bulk-work pace: clips per second with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.jobs.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_rate_spreads_batches_evenly():
    clock = Clock()
    pacer = Pacer(50, clock=clock, sleep=clock.sleep)
    for _ in range(11):
        await pacer.take(50)  # batches of 50 clips at 50 clips/s: one a second
    assert clock.now - 100.0 == pytest.approx(10.0)


async def test_a_pause_is_not_made_up_by_a_burst():
    clock = Clock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    await pacer.take(10)
    clock.now += 60  # idle for a minute
    await pacer.take(10)
    start = clock.now
    await pacer.take(10)
    assert clock.now - start == pytest.approx(1.0)  # the bucket held one batch, not 600 clips


async def test_no_rate_means_no_wait():
    clock = Clock()
    pacer = Pacer(0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        await pacer.take(1000)
    assert clock.now == 100.0 and pacer.waited == 0


@given(
    rate=st.floats(min_value=0.5, max_value=10_000),
    sizes=st.lists(st.integers(min_value=1, max_value=500), min_size=2, max_size=40),
)
async def test_never_faster_than_the_rate_after_the_first_batch(rate, sizes):
    clock = Clock()
    pacer = Pacer(rate, clock=clock, sleep=clock.sleep)
    await pacer.take(sizes[0])
    start = clock.now
    for n in sizes[1:]:
        await pacer.take(n)
    taken = sum(sizes[1:])
    # the first batch's bucket may carry at most one batch's worth forward
    assert taken <= rate * (clock.now - start) + max(sizes) + 1e-6
