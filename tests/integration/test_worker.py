"""The worker's failure handling, leases and shutdown against real PostgreSQL, Redis and HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg

from clipembed import errors, runtime
from clipembed.realtime import queue, queue_store, worker
from clipembed.status import stats as status_stats
from clipembed.testing.fakeopenai import expected_vector
from tests.integration.test_queue import embedding_of, queue_rows
from tests.plugins.queue import insert_clips
from tests.plugins.waiting import wait_for


def queue_row(url: str, clip_id) -> tuple | None:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT attempts, last_error, next_attempt_at > now(), leased_by FROM embedding_queue "
            "WHERE clip_id = %s",
            (clip_id,),
        ).fetchone()


def lease_expired(url: str, clip_id) -> bool:
    """The item's lease has run out by PostgreSQL's clock (the one ``claim`` goes by)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT leased_until < now() FROM embedding_queue WHERE clip_id = %s", (clip_id,)
        ).fetchone()[0]


def make_ready(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE embedding_queue SET next_attempt_at = now()")


class PoisonOnTitle:
    """The real service, except that texts containing ``marker`` fail as the provider's 400 would."""

    def __init__(self, real, marker: str) -> None:
        self.real, self.marker = real, marker
        self.model, self.dimensions = real.model, real.dimensions
        self.batches: list[int] = []

    async def embed_detailed(self, texts):
        self.batches.append(len(texts))
        good = [t for t in texts if self.marker not in t]
        outcome = await self.real.embed_detailed(good)
        vectors = iter(outcome.vectors)
        out = [None if self.marker in t else next(vectors) for t in texts]
        errs = [
            errors.PermanentProviderError("400 invalid input") if self.marker in t else None
            for t in texts
        ]
        return type(outcome)(out, errs, [False] * len(texts), outcome.stats)


async def test_one_poisoned_item_does_not_hold_back_its_batch(queue_runtime, database_url):
    ids = insert_clips(database_url, 6)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET title = 'POISON here' WHERE id = %s", (ids[3],))
    w = worker.Worker(queue_runtime, name="w", batch_size=10)
    w.max_attempts = 2
    w.service = PoisonOnTitle(w.service, "POISON")
    assert await w.run_once() == 6
    assert set(queue_rows(database_url)) == {ids[3]}  # the other five are done
    attempts, error, later, leased_by = queue_row(database_url, ids[3])
    assert (attempts, later, leased_by) == (1, True, None) and "400" in error
    make_ready(database_url)
    await w.run_once()
    assert queue_rows(database_url) == {}
    async with queue_runtime.pool.connection() as conn:
        [dead] = await queue.dead_letters(conn)
        assert (await status_stats.queue_stats(conn))["dead_letters"] == 1
    assert dead["clip_id"] == ids[3] and dead["attempts"] == 2
    assert dead["last_error"].startswith("PermanentProviderError")
    # editing the clip is a new chance: the trigger clears the dead letter and re-queues it
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET title = 'fixed' WHERE id = %s", (ids[3],))
    w.service = w.service.real
    await w.drain()
    vec, text = embedding_of(database_url, ids[3])
    np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    async with queue_runtime.pool.connection() as conn:
        assert (await status_stats.queue_stats(conn))["dead_letters"] == 0


async def test_a_provider_outage_costs_retries_not_dead_letters(
    openai_settings, database_url, fake_openai
):
    [cid] = insert_clips(database_url, 1)
    cfg = openai_settings(database_url=database_url, embedding_max_attempts=1)
    fake_openai.control(fail_rate_500=1.0)
    async with runtime.open_runtime(cfg) as rt:
        w = worker.Worker(rt, name="w")
        w.max_attempts = 2
        for attempt in range(1, 5):
            make_ready(database_url)
            assert await w.run_once() == 1
            attempts, error, later, _ = queue_row(database_url, cid)
            assert attempts == attempt and later and "500" in error
        assert w.stats.dead_lettered == 0
        fake_openai.control(fail_rate_500=0.0)
        make_ready(database_url)
        await w.drain()
    assert queue_rows(database_url) == {}
    assert embedding_of(database_url, cid)[0] is not None


async def test_an_expired_lease_is_taken_over_and_the_late_result_discarded(
    queue_runtime, database_url, fake_openai
):
    [cid] = insert_clips(database_url, 1)
    async with queue_runtime.pool.connection() as conn:
        [stale] = (
            await queue.claim(conn, worker="crashed", limit=10, lease=0.3, max_claims=5)
        ).items
        claimed = await queue.claim(conn, worker="other", limit=10, lease=5, max_claims=5)
        assert claimed == queue.ClaimResult([], [])  # leased
    await wait_for(
        lambda: lease_expired(database_url, cid),
        timeout=5,
        what="the crashed worker's 0.3 s lease to expire",
    )
    w = worker.Worker(queue_runtime, name="taker")
    assert await w.run_once() == 1
    assert w.stats.embedded == 1
    # the crashed worker comes back with a (wrong) vector: nothing is written
    async with queue_runtime.pool.connection() as conn:
        space = queue_runtime.require_space()
        written = await queue.complete(
            conn,
            [queue.SpaceWrite(stale, space.id, np.ones(768, np.float32) / np.sqrt(768), b"x", "m")],
            [stale],
            worker="crashed",
            targets=[queue.SpaceTarget(space.id, space.table_name, space.storage, 768)],
        )
    assert written == set()
    vec, text = embedding_of(database_url, cid)
    np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)


async def test_a_slow_batch_keeps_its_lease(openai_settings, database_url, fake_openai):
    [cid] = insert_clips(database_url, 1)
    cfg = openai_settings(database_url=database_url, clipembed_queue_lease_seconds=0.6)
    fake_openai.control(latency_ms=2000)
    async with runtime.open_runtime(cfg) as rt:
        slow = worker.Worker(rt, name="slow")
        task = asyncio.create_task(slow.run_once())
        await wait_for(
            lambda: fake_openai.stats()["requests"] == 1 or task.done(),
            what="the slow worker to claim the clip and send its request",
        )
        assert not task.done(), task
        for _ in range(6):  # 1.8 s, three lease lengths, while the 2 s request is in flight
            # not synchronisation: time has to pass beyond the lease so that only the heartbeat
            # renewing it keeps the thief out
            await asyncio.sleep(0.3)
            if task.done():
                break
            async with rt.pool.connection() as conn:
                claimed = await queue.claim(conn, worker="thief", limit=10, lease=5, max_claims=5)
                assert claimed == queue.ClaimResult([], [])
        await task
    assert slow.stats.embedded == 1 and fake_openai.stats()["requests"] == 1
    assert embedding_of(database_url, cid)[0] is not None


async def test_stop_finishes_the_batch_in_flight(queue_runtime, database_url, fake_openai):
    ids = insert_clips(database_url, 5)
    fake_openai.control(latency_ms=700)
    w = worker.Worker(queue_runtime, name="w", concurrency=1)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await wait_for(
        lambda: fake_openai.stats()["requests"] >= 1 or task.done(),
        what="the worker's first request to reach the provider",
    )
    assert not task.done(), task
    stop.set()  # as SIGTERM does
    stats = await task
    assert stats.embedded == 5
    assert all(embedding_of(database_url, i)[0] is not None for i in ids)


async def test_un_removing_a_clip_queues_it_again(queue_runtime, database_url):
    [cid] = insert_clips(database_url, 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE clips SET is_removed = true WHERE id = %s", (cid,))
        assert queue_rows(database_url) == {}
        conn.execute("UPDATE clips SET is_removed = false WHERE id = %s", (cid,))
    assert set(queue_rows(database_url)) == {cid}


class EditsBeforeRead(queue_store.PgQueueStore):
    """The real store, except that the first read is preceded by an edit of the claimed clip:
    the race between a claim and the read of its text, made certain."""

    def __init__(self, pool, url: str, clip_id) -> None:
        super().__init__(pool)
        self.url, self.clip_id, self.edited = url, clip_id, False

    async def read(self, ids):
        if not self.edited and self.clip_id in ids:
            self.edited = True
            with psycopg.connect(self.url) as conn:
                conn.execute(
                    "UPDATE clips SET title = title || ' (edited)' WHERE id = %s", (self.clip_id,)
                )
        return await super().read(ids)


async def test_an_edit_between_claim_and_read_is_embedded_once(
    openai_settings, database_url, fake_openai
):
    """The text read after the edit is the new one: it is written under the generation it was
    read with, once, instead of being counted superseded and paid for again. No Redis, so no
    cache hides a second request."""
    cfg = openai_settings(database_url=database_url, redis_url="none")
    [cid] = insert_clips(database_url, 1)
    async with runtime.open_runtime(cfg) as rt:
        store = EditsBeforeRead(rt.pool, database_url, cid)
        stats = await worker.Worker(rt, name="race", store=store).drain()
    assert store.edited
    assert (stats.embedded, stats.superseded) == (1, 0)
    assert fake_openai.stats()["embedded_more_than_once"] == 0
    assert queue_rows(database_url) == {}
    vector, text = embedding_of(database_url, cid)  # the mirror of the one space
    assert text.find("(edited)") > 0 and vector is not None
    assert np.allclose(vector, expected_vector(text, len(vector)), atol=1e-6)
