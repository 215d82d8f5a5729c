"""Per-client limits (GCRA): tables and properties, no I/O.

Times are passed in, never read from a clock: ``_hit_local(..., now=...)`` is the limiter's
in-process path with the time it would have read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import client_limits
from clipembed.api.limits import SearchLimits, refusal_hold


@pytest.mark.parametrize(
    ("tat", "now", "force", "expected"),
    [
        (0, 1000, False, (1010, 0)),  # fresh: allowed, the TAT one interval ahead
        (1020, 1000, False, (1030, 0)),  # two earlier hits within the burst of 3
        (1030, 1000, False, (1030, 10)),  # a fourth at once: 10 to wait, nothing consumed
        (1030, 1000, True, (1040, 10)),  # recorded anyway: counted, and 10 over
        (1060, 1000, True, (1060, 30)),  # the cap: 2 * burst intervals ahead, a window to wait
        (500, 1000, False, (1010, 0)),  # a TAT in the past is the same as none
    ],
)
def test_gcra(tat, now, force, expected):
    assert client_limits.gcra(tat, now, interval=10, burst=3, force=force) == expected


def hits(limiter, times, *, force=False):
    return [limiter._hit_local("c", force=force, now=t) for t in times]


def test_take_lets_a_burst_through_then_one_per_interval_and_refusals_cost_nothing():
    limiter = client_limits.KeyedLimiter("t", rate=1.0, burst=3)  # 1 per 1000 ms
    assert hits(limiter, [0, 0, 0]) == [0, 0, 0]
    assert hits(limiter, [0, 500, 999]) == [1000, 500, 1]  # refused: nothing consumed
    assert hits(limiter, [1000]) == [0]  # so the next interval's hit goes through
    assert hits(limiter, [1000]) == [1000]


def test_record_counts_every_failure_and_frees_a_key_one_window_after_the_last():
    per_minute = 5
    limiter = client_limits.KeyedLimiter("t", rate=per_minute / 60, burst=per_minute)
    waits = hits(limiter, [0] * 20, force=True)
    assert waits[:per_minute] == [0] * per_minute and all(w > 0 for w in waits[per_minute:])
    assert max(waits) <= 60_000  # never more than a minute behind, however many failures
    assert hits(limiter, [120_000], force=True) == [0]  # a minute after the cap: free again


def test_keys_are_independent_and_memory_is_bounded():
    limiter = client_limits.KeyedLimiter("t", rate=1.0, burst=1, max_keys=100)
    for i in range(1000):
        assert limiter._hit_local(f"10.0.{i // 256}.{i % 256}", force=False, now=0) == 0
    assert len(limiter._local) == 100


def test_a_rate_of_zero_means_no_limit():
    limiter = client_limits.KeyedLimiter("t", rate=0, burst=1)
    assert not limiter.enabled


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2000), min_size=1, max_size=200),
)
def test_no_window_ever_lets_more_than_burst_plus_its_share(rate, burst, gaps):
    """Whatever the arrival times: in any window of W ms at most ``burst + W / interval``
    hits are let through (the promise "N at once, then the rate")."""
    limiter = client_limits.KeyedLimiter("t", rate=rate, burst=burst)
    now, allowed = 0.0, []
    for gap in gaps:
        now += gap
        if limiter._hit_local("c", force=False, now=now) == 0:
            allowed.append(now)
    interval = limiter.interval_ms
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            window = allowed[j] - start
            assert j - i + 1 <= burst + window / interval + 1e-6


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64: one client
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_client_key(address, key):
    assert client_limits.client_key(address) == key


@pytest.mark.parametrize(("wait", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds_rounded_up(wait, header):
    assert client_limits.retry_after(wait) == header


async def test_minute_counts_sum_a_sliding_hour():
    counts = client_limits.MinuteCounts("t")
    await counts.add(2, now=0)
    await counts.add(3, now=30 * 60)
    await counts.add(1, now=59 * 60 + 59)
    assert await counts.last(60, now=59 * 60 + 59) == 6
    assert await counts.last(60, now=60 * 60) == 4  # minute 0 has left the hour


# --- holding a refused search (clipembed.api.limits.refusal_hold) ----------------------------


def test_a_lone_refusal_is_held_for_its_retry_after():
    assert refusal_hold(1.0, held=1, rate=10.0, most=5.0) == 1.0


def test_many_held_refusals_from_one_address_come_back_at_its_budget_rate():
    """256 connections that ignore Retry-After: each is held 25.6 s at 10 a second, so the
    address sends no faster than its budget, up to the bound."""
    assert refusal_hold(1.0, held=256, rate=10.0, most=60.0) == 25.6
    assert refusal_hold(1.0, held=256, rate=10.0, most=5.0) == 5.0


def test_no_hold_when_turned_off_or_without_a_rate():
    assert refusal_hold(100.0, held=3, rate=0.01, most=0.0) == 0.0
    assert refusal_hold(2.0, held=50, rate=0.0, most=5.0) == 2.0


async def test_held_refusals_are_counted_per_address_while_held_and_forgotten_after():
    import asyncio

    from fastapi import HTTPException

    limits = SearchLimits(requests_per_second=1.0, burst=1, embeds_per_minute=0, hold_max_s=0.2)
    await limits.check_request("203.0.113.7")  # the burst
    refused = [asyncio.ensure_future(limits.check_request("203.0.113.7")) for _ in range(2)]
    async with asyncio.timeout(5):
        while sum(limits.held.values()) < 2:
            await asyncio.sleep(0.01)
    assert list(limits.held.values()) == [2]  # one key, two requests held
    for outcome in await asyncio.gather(*refused, return_exceptions=True):
        assert isinstance(outcome, HTTPException) and outcome.status_code == 429
    assert limits.held == {}
