"""Queries first, one budget (issue 18): the pure GCRA state and two limiters sharing it."""

from __future__ import annotations

import asyncio

from clipembed.embedding import ratelimit
from clipembed.embedding.ratelimit import BULK_YIELD_MS, QUERY_WAIT_TTL_MS, GcraState

REQ = 100.0  # ms per request
TOK = 0.001  # ms per token


def test_bulk_uses_the_whole_budget_while_no_query_waits():
    state = GcraState()
    assert state.try_acquire(0.0, REQ, TOK, 10, role="bulk") == 0.0
    assert state.try_acquire(0.0, REQ, TOK, 10, role="bulk") == REQ  # the next slot
    assert state.try_acquire(REQ, REQ, TOK, 10, role="bulk") == 0.0


def test_a_waiting_query_takes_the_next_slot_and_bulk_yields_until_then():
    state = GcraState()
    assert state.try_acquire(0.0, REQ, TOK, 10, role="bulk") == 0.0
    # a query arrives: the slot is taken, it registers and waits
    assert state.try_acquire(10.0, REQ, TOK, 10, role="query", member="q1") == REQ - 10.0
    # bulk work wakes at the slot but yields: the query is waiting
    assert state.try_acquire(REQ, REQ, TOK, 10, role="bulk") == BULK_YIELD_MS
    # the query takes the slot and leaves the waiting list
    assert state.try_acquire(REQ, REQ, TOK, 10, role="query", member="q1") == 0.0
    assert state.waiting == {}
    # bulk work goes on at the slot after
    assert state.try_acquire(2 * REQ, REQ, TOK, 10, role="bulk") == 0.0


def test_a_query_that_gave_up_or_crashed_stops_holding_bulk_work():
    state = GcraState()
    state.try_acquire(0.0, REQ, TOK, 10, role="bulk")
    state.try_acquire(0.0, REQ, TOK, 10, role="query", member="gone")
    state.try_acquire(0.0, REQ, TOK, 10, role="query", member="left")
    state.leave("left")
    assert set(state.waiting) == {"gone"}
    assert state.try_acquire(REQ, REQ, TOK, 10, role="bulk") == BULK_YIELD_MS
    # "gone" never came back: its registration expires
    assert state.try_acquire(QUERY_WAIT_TTL_MS + 1.0, REQ, TOK, 10, role="bulk") == 0.0


def test_role_any_ignores_priority():
    state = GcraState()
    state.try_acquire(0.0, REQ, TOK, 10, role="query", member="q")
    assert state.try_acquire(REQ, REQ, TOK, 10) == 0.0  # "any" neither waits nor registers


async def test_two_limiters_on_one_budget_serve_the_query_before_earlier_bulk_work():
    state = GcraState()
    kw = {"requests_per_minute": 600, "tokens_per_minute": 10**9, "state": state}
    bulk = ratelimit.RateLimiter(role="bulk", **kw)
    query = ratelimit.RateLimiter(role="query", **kw)
    order: list[str] = []
    await bulk.acquire(1)  # the current slot is bulk's

    async def take(limiter: ratelimit.RateLimiter, name: str) -> None:
        await limiter.acquire(1)
        order.append(name)

    bulk_task = asyncio.create_task(take(bulk, "bulk"))
    await asyncio.sleep(0)  # bulk work is waiting first
    await take(query, "query")
    await bulk_task
    assert order == ["query", "bulk"]
    assert state.waiting == {}


async def test_a_cancelled_query_unregisters():
    state = GcraState()
    query = ratelimit.RateLimiter(
        requests_per_minute=1, tokens_per_minute=10**9, role="query", state=state
    )
    await query.acquire(1)
    task = asyncio.create_task(query.acquire(1))  # a minute away
    for _ in range(100):
        if state.waiting:
            break
        await asyncio.sleep(0)
    assert len(state.waiting) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert state.waiting == {}
