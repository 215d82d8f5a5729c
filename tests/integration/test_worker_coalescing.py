"""Coalesced wake-ups and claims (issue 12): a burst of inserts is embedded in few batches.

The worker runs its real loop (``Worker.run``) against real PostgreSQL and the fake provider.
The poll interval is an hour, so every claim here is caused by a notification, the catch-up at
LISTEN, or a full batch; where a test must not depend on timing, the coalescing window is an
hour too, so that only a batch's worth of notifications ends it. No timing is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from clipembed import errors, runtime
from clipembed.realtime import queue, worker
from clipembed.testing.fakeopenai import expected_vector
from tests.integration.test_queue import embedding_of, queue_rows
from tests.plugins.queue import insert_clips
from tests.plugins.waiting import wait_for

HOUR = 3600.0


@pytest.fixture
def open_worker(openai_settings, database_url) -> Callable[..., Any]:
    """``async with open_worker(coalesce_ms=..., batch=...) as w``: a running worker; stopped after."""

    def make(**kwargs: Any) -> Any:
        return _running(openai_settings, database_url, **kwargs)

    return make


class _running:
    def __init__(
        self,
        openai_settings: Callable[..., Any],
        url: str,
        *,
        coalesce_ms: int,
        batch: int,
        concurrency: int = 2,
        window: float | None = None,
    ) -> None:
        self.cfg = openai_settings(
            database_url=url,
            clipembed_queue_lease_seconds=30,
            clipembed_queue_poll_seconds=HOUR,  # no claim is caused by the poll
            clipembed_queue_coalesce_ms=coalesce_ms,
        )
        self.batch, self.concurrency, self.window = batch, concurrency, window
        self.stack: Any = None

    async def __aenter__(self) -> worker.Worker:
        self.rt_cm = runtime.open_runtime(self.cfg)
        rt = await self.rt_cm.__aenter__()
        w = worker.Worker(rt, name="w", batch_size=self.batch, concurrency=self.concurrency)
        if self.window is not None:
            w.coalesce = self.window  # beyond the setting's range: only a full burst ends it
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(w.run(self.stop))
        # the catch-up claim at LISTEN: from now on a commit is seen as a notification
        await wait_for(
            lambda: w.stats.claims >= 1 or self.task.done(), what="the worker's first claim"
        )
        assert not self.task.done(), self.task
        return w

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, 30)
        finally:
            await self.rt_cm.__aexit__(*exc)


async def insert_one_per_transaction(url: str, n: int, prefix: str) -> list[Any]:
    """``n`` clips, each INSERT its own transaction (so each sends its own NOTIFY)."""
    ids = []
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        for i in range(n):
            cur = await conn.execute(
                """INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title,
                   creator_name, broadcaster_name, game_name, created_at)
                   VALUES (%s, 'u', 'e', %s, 'c', 'b', 'g', now()) RETURNING id""",
                (f"{prefix}-{i}", f"{prefix} burst title {i}"),
            )
            row = await cur.fetchone()
            assert row is not None
            ids.append(row[0])
    return ids


def all_embedded(url: str, ids: list[Any]) -> bool:
    with psycopg.connect(url) as conn:
        missing = conn.execute(
            "SELECT count(*) FROM clips WHERE id = ANY(%s) AND embedding IS NULL", (ids,)
        ).fetchone()
    return missing is not None and missing[0] == 0


def assert_embedded_correctly(url: str, ids: list[Any]) -> None:
    for cid in ids:
        vec, text = embedding_of(url, cid)
        np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    assert not set(queue_rows(url)) & set(ids)


async def test_a_burst_of_inserts_is_claimed_in_one_batch(
    open_worker, database_url, fake_openai
) -> None:
    n = 20
    async with open_worker(coalesce_ms=1000, batch=n, window=HOUR) as w:
        before = fake_openai.stats()["requests"]
        # 20 transactions, 20 notifications: the first wakes the worker, which waits for more
        # instead of claiming the one item ready; the 20th makes a full batch and ends the wait
        ids = await insert_one_per_transaction(database_url, n, "burst")
        await wait_for(lambda: all_embedded(database_url, ids), what="the burst to be embedded")
        stats = fake_openai.stats()
        assert stats["requests"] - before == 1
        assert stats["inputs"] == n and stats["embedded_more_than_once"] == 0
        # the worker counts after its transaction commits (what all_embedded sees)
        await wait_for(lambda: w.stats.embedded == n, what="the worker to count the burst")
    assert_embedded_correctly(database_url, ids)


async def test_a_worker_that_claimed_a_full_batch_claims_again_at_once(
    open_worker, database_url, fake_openai
) -> None:
    # queued before the worker listens: the catch-up claim takes the first 10, and each full
    # batch is followed by another claim without waiting (the window and the poll are an hour)
    ids = insert_clips(database_url, 25, prefix="backlog")
    async with open_worker(coalesce_ms=1000, batch=10, window=HOUR, concurrency=1) as w:
        await wait_for(lambda: all_embedded(database_url, ids), what="the backlog to be embedded")
        assert fake_openai.stats()["requests"] == 3  # 10 + 10 + 5
        await wait_for(lambda: w.stats.embedded == 25, what="the worker to count 25")
        # no spinning: the three claims that found work, and at most one that found none
        assert w.stats.claims <= 4, w.stats
    assert_embedded_correctly(database_url, ids)


async def test_the_wait_ends_with_the_window_when_little_arrives(
    open_worker, database_url, fake_openai
) -> None:
    # default window: one insert is far from a batch, and is still embedded after the window
    async with open_worker(coalesce_ms=20, batch=100) as w:
        ids = await insert_one_per_transaction(database_url, 1, "single")
        await wait_for(lambda: all_embedded(database_url, ids), what="the single clip")
        await wait_for(lambda: w.stats.embedded == 1, what="the worker to count it")
        assert fake_openai.stats()["requests"] == 1
    assert_embedded_correctly(database_url, ids)


async def test_without_coalescing_each_notification_is_claimed_at_once(
    open_worker, database_url, fake_openai
) -> None:
    # CLIPEMBED_QUEUE_COALESCE_MS=0: the loop of before: every commit is claimed as it comes
    # (with an hour's window instead, the second clip below would wait for a batch)
    async with open_worker(coalesce_ms=0, batch=100) as w:
        assert w.coalesce == 0
        ids = []
        for i in range(3):
            ids += await insert_one_per_transaction(database_url, 1, f"eager{i}")
            await wait_for(lambda ids=list(ids): all_embedded(database_url, ids), what=f"clip {i}")
            assert fake_openai.stats()["requests"] == i + 1
        await wait_for(lambda: w.stats.embedded == 3, what="the worker to count 3")
    assert_embedded_correctly(database_url, ids)


async def test_a_batch_s_failures_are_recorded_together(queue_runtime, database_url) -> None:
    # the set-based failure path: a permanent error past the budget goes to the dead letters,
    # a transient one backs off, and an item no longer ours is left alone
    ids = insert_clips(database_url, 4, prefix="fails")
    async with queue_runtime.pool.connection() as conn:
        items = (await queue.claim(conn, worker="w", limit=10, lease=30, max_claims=5)).items
        by_id = {i.clip_id: i for i in items}
        poison, flaky, other = by_id[ids[0]], by_id[ids[1]], by_id[ids[2]]
        await conn.execute(
            "UPDATE embedding_queue SET leased_by = 'someone' WHERE clip_id = %s", (ids[2],)
        )
        await conn.commit()
        dead = await queue.fail_many(
            conn,
            [
                (poison, errors.PermanentProviderError("400 bad input")),
                (flaky, errors.RetryableProviderError("503")),
                (other, errors.PermanentProviderError("400 not mine")),
            ],
            worker="w",
            max_attempts=1,
        )
        assert dead == [True, False, False]
        [letter] = await queue.dead_letters(conn)
    assert letter["clip_id"] == ids[0] and "400 bad input" in letter["last_error"]
    with psycopg.connect(database_url) as conn:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT clip_id, leased_by, claims, next_attempt_at > now(), last_error "
                "FROM embedding_queue"
            )
        }
    assert set(rows) == {ids[1], ids[2], ids[3]}
    leased_by, claims, later, error = rows[ids[1]]
    assert (leased_by, claims, later) == (None, 0, True) and "503" in error
    assert rows[ids[2]][:2] == ("someone", 1) and rows[ids[2]][3] is None  # not ours: untouched
    assert rows[ids[3]][0] == "w"  # claimed, not failed: still leased
