"""Change detection, the queue and the worker against real PostgreSQL, Redis and HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from clipembed import clips
from clipembed.realtime import queue, reconcile, worker
from clipembed.status import stats as status_stats
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.queue import insert_clips
from tests.plugins.waiting import wait_for


def queue_rows(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT clip_id, generation FROM embedding_queue")}


def embedding_of(url: str, clip_id) -> tuple[np.ndarray | None, str]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        row = conn.execute(
            "SELECT embedding, title, broadcaster_name, creator_name, game_name FROM clips WHERE id = %s",
            (clip_id,),
        ).fetchone()
    text = clips.embedding_text(clips.ClipText(*row[1:]))
    return (row[0].to_numpy() if row[0] is not None else None), text


def listening_connections(url: str) -> int:
    """How many sessions on this database have LISTENed (a worker's listener is connected)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN%%'"
        ).fetchone()[0]


class HoldAfterEmbedding:
    """The real service, except that each call, once the provider has answered, signals
    ``embedded`` and waits for ``release`` before handing the vectors to the worker."""

    def __init__(self, real) -> None:
        self.real = real
        self.model, self.dimensions = real.model, real.dimensions
        self.embedded = asyncio.Event()
        self.release = asyncio.Event()

    async def embed_detailed(self, texts):
        outcome = await self.real.embed_detailed(texts)
        self.embedded.set()
        await self.release.wait()
        return outcome


async def test_insert_and_text_edits_enqueue_counters_do_not(
    queue_runtime, database_url, fake_openai
):
    [cid] = insert_clips(database_url, 1)
    assert queue_rows(database_url) == {cid: 1}
    w = worker.Worker(queue_runtime, name="w1")
    await w.drain()
    assert queue_rows(database_url) == {}
    vec, text = embedding_of(database_url, cid)
    np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE clips SET view_count = view_count + 100, vote_score = 5 WHERE id = %s", (cid,)
        )
        conn.execute(
            "UPDATE clips SET title = title WHERE id = %s", (cid,)
        )  # same value: no change
    assert queue_rows(database_url) == {}
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET title = 'a brand new title' WHERE id = %s", (cid,))
        conn.execute("UPDATE clips SET game_name = 'Minecraft' WHERE id = %s", (cid,))
    assert queue_rows(database_url) == {cid: 2}  # coalesced into one item, generation bumped
    requests = fake_openai.stats()["requests"]
    await w.drain()
    vec, text = embedding_of(database_url, cid)
    assert "a brand new title" in text and "Minecraft" in text
    np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    assert fake_openai.stats()["requests"] == requests + 1


async def test_edit_reverted_before_the_worker_costs_no_provider_call(
    queue_runtime, database_url, fake_openai
):
    [cid] = insert_clips(database_url, 1)
    w = worker.Worker(queue_runtime, name="w1")
    await w.drain()
    with psycopg.connect(database_url) as conn:
        original = conn.execute("SELECT title FROM clips WHERE id = %s", (cid,)).fetchone()[0]
        conn.execute("UPDATE clips SET title = 'oops' WHERE id = %s", (cid,))
        conn.execute("UPDATE clips SET title = %s WHERE id = %s", (original, cid))
    requests = fake_openai.stats()["requests"]
    stats = await w.drain()
    assert stats.unchanged == 1
    assert fake_openai.stats()["requests"] == requests


async def test_edit_during_embedding_is_not_overwritten_with_a_stale_vector(
    queue_runtime, database_url, fake_openai
):
    [cid] = insert_clips(database_url, 1)
    w = worker.Worker(queue_runtime, name="w1")
    held = w.service = HoldAfterEmbedding(w.service)
    task = asyncio.create_task(w.run_once())
    # claimed and embedded by the provider, not yet completed: the edit lands in between
    await wait_for(
        lambda: held.embedded.is_set() or task.done(),
        what="the worker to claim the clip and get its vector from the provider",
    )
    assert not task.done(), task
    assert fake_openai.stats()["requests"] == 1
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET title = 'edited while embedding' WHERE id = %s", (cid,))
    held.release.set()
    await task
    assert w.stats.superseded == 1
    vec, _ = embedding_of(database_url, cid)
    assert vec is None  # the stale vector was not written
    w.service = held.real
    await w.drain()
    vec, text = embedding_of(database_url, cid)
    assert "edited while embedding" in text
    np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)


async def test_failures_back_off_then_dead_letter_then_replay(
    queue_runtime, database_url, fake_openai
):
    [cid] = insert_clips(database_url, 1)
    fake_openai.control(api_key="sk-not-ours-000000000000")  # every request: 401
    w = worker.Worker(queue_runtime, name="w1")
    w.max_attempts = 3
    async with queue_runtime.pool.connection() as conn:
        for attempt in range(1, 4):
            await conn.execute("UPDATE embedding_queue SET next_attempt_at = now()")
            await conn.commit()
            assert await w.run_once() == 1
            s = await status_stats.queue_stats(conn)
            if attempt < 3:
                cur = await conn.execute(
                    "SELECT attempts, next_attempt_at > now(), last_error FROM embedding_queue"
                )
                attempts, later, error = await cur.fetchone()
                await conn.commit()
                assert attempts == attempt and later and "401" in error
        assert s["dead_letters"] == 1 and s["pending"] == 0
        dead = await queue.dead_letters(conn)
        assert dead[0]["clip_id"] == cid and "401" in dead[0]["last_error"]
        fake_openai.control(api_key=None)
        assert await queue.replay(conn, [cid]) == 1
    await w.drain()
    vec, text = embedding_of(database_url, cid)
    np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)


async def test_two_workers_never_process_the_same_item(queue_runtime, database_url, fake_openai):
    insert_clips(database_url, 120)
    fake_openai.control(latency_ms=20)
    workers = [worker.Worker(queue_runtime, name=f"w{i}", batch_size=10) for i in range(3)]
    await asyncio.gather(*(w.drain() for w in workers))
    assert sum(w.stats.claimed for w in workers) == 120
    assert sum(w.stats.embedded for w in workers) == 120
    assert fake_openai.stats()["embedded_more_than_once"] == 0


async def test_notify_wakes_a_listening_worker_within_seconds(queue_runtime, database_url):
    w = worker.Worker(queue_runtime, name="listener")
    w.poll = 30  # only NOTIFY can wake it in time
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        await wait_for(
            lambda: listening_connections(database_url) >= 1 or task.done(),
            what="the worker's LISTEN connection",
        )
        assert not task.done(), task
        [cid] = await asyncio.to_thread(insert_clips, database_url, 1)
        # well under the 30 s poll: only the NOTIFY can have woken the worker this soon
        await wait_for(
            lambda: embedding_of(database_url, cid)[0] is not None,
            timeout=5,
            interval=0.05,
            what="the NOTIFY to wake the listening worker and the clip to be embedded",
        )
    finally:
        stop.set()
        await task


async def test_removed_clips_leave_the_queue(queue_runtime, database_url):
    ids = insert_clips(database_url, 2)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET is_removed = true WHERE id = %s", (ids[0],))
    assert set(queue_rows(database_url)) == {ids[1]}


async def test_reconcile_finds_rows_loaded_without_triggers(queue_runtime, database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("SET session_replication_role = replica")  # triggers off, as bulk loaders do
        conn.execute(
            """INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
               broadcaster_name, created_at) SELECT 'bulk-' || g, 'u', 'e', 'bulk ' || g, 'c', 'b', now()
               FROM generate_series(1, 25) g"""
        )
    assert queue_rows(database_url) == {}
    assert await reconcile.sweep(queue_runtime) == 25
    assert await reconcile.sweep(queue_runtime) == 0  # already queued: not twice
    stats = await worker.Worker(queue_runtime, name="w").drain()
    assert stats.embedded == 25
    assert await reconcile.sweep(queue_runtime) == 0
