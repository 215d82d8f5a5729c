"""The reconciliation sweep against real PostgreSQL: what triggers miss, it finds, once."""

from __future__ import annotations

import psycopg

from clipembed import runtime
from clipembed.realtime import reconcile, worker
from tests.plugins.queue import insert_clips


def queued(url: str) -> set:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT clip_id FROM embedding_queue")}


async def test_a_changed_model_makes_every_embedding_stale(
    queue_runtime, database_url, openai_settings
):
    ids = insert_clips(database_url, 12)
    await worker.Worker(queue_runtime, name="w").drain()
    assert await reconcile.sweep(queue_runtime) == 0
    cfg = openai_settings(
        database_url=database_url,
        embedding_model="text-embedding-3-large",
        clipembed_queue_poll_seconds=0.2,
    )
    async with runtime.open_runtime(cfg) as rt:
        assert await reconcile.sweep(rt) == 12
        assert queued(database_url) == set(ids)
        stats = await worker.Worker(rt, name="w2").drain()
        assert stats.embedded == 12
        assert await reconcile.sweep(rt) == 0
    with psycopg.connect(database_url) as conn:
        models = conn.execute("SELECT DISTINCT embedding_model FROM clips").fetchall()
    assert models == [("text-embedding-3-large",)]


async def test_a_hash_that_does_not_match_the_text_is_found(queue_runtime, database_url):
    ids = insert_clips(database_url, 5)
    await worker.Worker(queue_runtime, name="w").drain()
    with psycopg.connect(database_url) as conn:
        # the text changed behind the triggers' back
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE clips SET title = 'changed silently' WHERE id = %s", (ids[2],))
    assert queued(database_url) == set()
    assert await reconcile.sweep(queue_runtime) == 1
    assert queued(database_url) == {ids[2]}


async def test_removed_and_dead_lettered_clips_are_left_alone(queue_runtime, database_url):
    ids = insert_clips(database_url, 3)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET is_removed = true WHERE id = %s", (ids[0],))
        conn.execute(
            """WITH gone AS (DELETE FROM embedding_queue WHERE clip_id = %s RETURNING clip_id)
               INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at)
               SELECT clip_id, 5, 'poison', now() FROM gone""",
            (ids[1],),
        )
        conn.execute("DELETE FROM embedding_queue")
    # ids[2] lost its queue row (as after a restore): the only one to enqueue
    assert await reconcile.sweep(queue_runtime) == 1
    assert queued(database_url) == {ids[2]}


async def test_only_one_sweep_runs_at_a_time(queue_runtime, database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            """INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
               broadcaster_name, created_at) SELECT 'bulk-' || g, 'u', 'e', 'bulk ' || g, 'c', 'b', now()
               FROM generate_series(1, 7) g"""
        )
    with psycopg.connect(database_url, autocommit=True) as leader:
        leader.execute("SELECT pg_advisory_lock(%s)", (reconcile.LOCK_KEY,))
        assert await reconcile.sweep(queue_runtime) == 0  # another replica is sweeping
        leader.execute("SELECT pg_advisory_unlock(%s)", (reconcile.LOCK_KEY,))
    assert await reconcile.sweep(queue_runtime) == 7
