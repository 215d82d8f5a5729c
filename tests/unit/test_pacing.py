"""The bulk-work pace: clips per second with an injected clock."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.bulk.adaptive_pace import FLOOR_FRACTION, WINDOW_SECONDS, AdaptivePace
from clipembed.bulk.pacing import Pacer


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


# ---------------------------------------------------------------- the adaptive pace


def _window(pace: AdaptivePace, clock: Clock, clips: float, oldest_ms: float):
    """One window: bulk work hands on ``clips`` clips; search's oldest statement ``oldest_ms``."""
    pace.took(clips)
    clock.now += WINDOW_SECONDS
    return pace.observe(oldest_ms)


def test_a_suffering_search_halves_what_bulk_work_did_and_calm_restores_it():
    clock = Clock()
    pace = AdaptivePace(Pacer(0, clock=clock, sleep=clock.sleep), target_ms=200, clock=clock)
    assert _window(pace, clock, 2000, 0) is None  # 1,000 clips/s, search calm: unpaced
    change = _window(pace, clock, 2000, 450)
    assert change is not None and change.rate == 500 and pace.pacer.rate == 500
    assert change.search_ms == 450 and change.target_ms == 200
    change = _window(pace, clock, 1000, 300)  # still suffering: halved again
    assert change is not None and pace.pacer.rate == 250
    assert _window(pace, clock, 500, 150) is None  # under the target but not calm: held
    rates = []
    while pace.pacer.rate > 0:  # calm windows: +25 % each, then unpaced past 2x the fastest
        assert _window(pace, clock, pace.pacer.rate * WINDOW_SECONDS, 10) is not None
        rates.append(pace.pacer.rate)
    assert rates[0] == 312.5 and rates[-1] == 0 and len(rates) < 12
    assert pace.slowest == 250 and pace.changes[-1].reason.startswith("search is calm: back")


def test_the_pace_never_falls_below_its_floor_nor_rises_above_max_rate():
    clock = Clock()
    pace = AdaptivePace(Pacer(100, clock=clock, sleep=clock.sleep), target_ms=200, clock=clock)
    for _ in range(20):
        _window(pace, clock, pace.pacer.rate * WINDOW_SECONDS, 5000)
    assert pace.pacer.rate == pytest.approx(100 * FLOOR_FRACTION)  # 5 % of --max-rate
    for _ in range(40):
        _window(pace, clock, pace.pacer.rate * WINDOW_SECONDS, 0)
    assert pace.pacer.rate == 100  # back to --max-rate, never above it


def test_no_target_or_no_work_changes_nothing():
    clock = Clock()
    off = AdaptivePace(Pacer(0, clock=clock, sleep=clock.sleep), target_ms=0, clock=clock)
    assert not off.enabled
    idle = AdaptivePace(Pacer(0, clock=clock, sleep=clock.sleep), target_ms=200, clock=clock)
    assert _window(idle, clock, 0, 900) is None  # nothing moved: nothing to slow
    clock.now += 0.5
    assert idle.observe(900) is None  # mid-window: no decision yet


@given(st.lists(st.tuples(st.floats(0, 5000), st.floats(0, 2000)), max_size=60))
def test_the_pace_stays_within_its_bounds(windows):
    clock = Clock()
    pace = AdaptivePace(Pacer(400, clock=clock, sleep=clock.sleep), target_ms=200, clock=clock)
    for clips, oldest in windows:
        _window(pace, clock, clips, oldest)
        assert 400 * FLOOR_FRACTION - 1e-9 <= pace.pacer.rate <= 400


async def test_the_console_hears_of_a_change_at_most_every_fifteen_seconds(monkeypatch):
    """Every change is logged; the events table gets one per EVENT_SECONDS, and always the
    return to full pace (so the console never shows a slowdown that is over)."""
    from clipembed.bulk import adaptive_pace

    recorded: list[dict] = []

    async def event(pool, kind, detail):
        assert kind == "bulk_pace"
        recorded.append(detail)

    monkeypatch.setattr(adaptive_pace.rollups, "event", event)
    clock = Clock()
    announce = adaptive_pace.Announcer(pool=None, by="backfill", clock=clock)
    slow = adaptive_pace.Change(rate=50.0, search_ms=400.0, target_ms=200, reason="slow")
    await announce(slow)
    clock.now += 2
    await announce(dataclasses.replace(slow, rate=25.0))  # within 15 s: logged only
    clock.now += 14
    await announce(dataclasses.replace(slow, rate=12.5))
    clock.now += 1
    await announce(adaptive_pace.Change(rate=0, search_ms=3.0, target_ms=200, reason="calm"))
    assert [d["rate"] for d in recorded] == [50.0, 12.5, 0]
    assert recorded[0] == {
        "rate": 50.0,
        "search_ms": 400.0,
        "target_ms": 200,
        "reason": "slow",
        "by": "backfill",
    }
