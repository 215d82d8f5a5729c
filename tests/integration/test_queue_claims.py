"""Queue safety against real PostgreSQL: the claim limit (migration 0006) and lost leases.

A worker that dies while processing an item (crash, OOM, ``kill -9``) never records a failure:
its lease simply expires. ``claims`` counts such claims; once an item has been claimed
``CLIPEMBED_QUEUE_MAX_ATTEMPTS`` times without finishing, the next claim moves it to the dead
letters instead of handing it out again. A crash is simulated by claiming with the queue API (or
by a service that raises out of the batch) and never completing; leases are then expired in SQL.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import psycopg

from clipembed import errors, runtime
from clipembed.db import migrations
from clipembed.realtime import queue, worker
from clipembed.status import stats as status_stats
from clipembed.testing.fakeopenai import expected_vector
from tests.integration.test_queue import HoldAfterEmbedding, embedding_of, queue_rows
from tests.plugins.queue import clipembed_cli, insert_clips
from tests.plugins.waiting import wait_for

NOTHING = queue.ClaimResult([], [])

AUDIT = """
CREATE TABLE embedding_writes (clip_id uuid, content_hash bytea, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION log_embedding_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO embedding_writes (clip_id, content_hash) VALUES (NEW.id, NEW.embedding_content_hash);
    RETURN NEW;
END $$;
CREATE TRIGGER log_embedding_write AFTER UPDATE OF embedding ON clips
    FOR EACH ROW WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION log_embedding_write();
"""


def counters(url: str, clip_id) -> tuple[int, int, int] | None:
    """(claims, attempts, generation) of the clip's queue row, None when it has none."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT claims, attempts, generation FROM embedding_queue WHERE clip_id = %s",
            (clip_id,),
        ).fetchone()


def expire_leases(url: str) -> int:
    """Every lease runs out now, as it does some time after its worker died."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "UPDATE embedding_queue SET leased_until = now() - interval '1 second' "
            "WHERE leased_until IS NOT NULL"
        ).rowcount


def leased_by(url: str, name: str) -> list:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT clip_id FROM embedding_queue WHERE leased_by = %s", (name,)
        ).fetchall()
    return [r[0] for r in rows]


def dead_letter_rows(url: str) -> dict:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT clip_id, last_error FROM embedding_dead_letters").fetchall()
    return dict(rows)


async def claim_and_crash(rt, url: str, clip_id, *, times: int, max_claims: int) -> None:
    """``times`` workers in turn claim the clip and die without a word; the leases expire."""
    async with rt.pool.connection() as conn:
        for n in range(1, times + 1):
            got = await queue.claim(
                conn, worker=f"doomed-{n}", limit=10, lease=60, max_claims=max_claims
            )
            assert [(i.clip_id, i.claims) for i in got.items] == [(clip_id, n)]
            assert got.dead_lettered == []
            # while the dead worker's lease runs, nobody else gets the item
            other = await queue.claim(conn, worker="other", limit=10, lease=60, max_claims=5)
            assert other == NOTHING
            assert expire_leases(url) == 1


async def test_an_item_that_never_finishes_is_dead_lettered_after_max_claims(
    queue_runtime, database_url, fake_openai, caplog
):
    [cid] = insert_clips(database_url, 1)
    await claim_and_crash(queue_runtime, database_url, cid, times=3, max_claims=3)
    assert counters(database_url, cid)[0] == 3

    w = worker.Worker(queue_runtime, name="survivor")
    w.max_attempts = 3  # CLIPEMBED_QUEUE_MAX_ATTEMPTS
    with caplog.at_level(logging.ERROR, logger="clipembed.realtime.worker"):
        assert await w.run_once() == 1  # the fourth claim dead-letters instead of leasing
    assert (w.stats.claimed, w.stats.dead_lettered) == (0, 1)
    assert fake_openai.stats()["requests"] == 0  # handed to no one: no provider call
    assert queue_rows(database_url) == {}
    reason = dead_letter_rows(database_url)[cid]
    assert reason == queue.CLAIM_LIMIT_REASON % 3
    assert reason.startswith("claimed 3 times without finishing: the worker processing it")
    assert "crashed or was killed each time" in reason
    async with queue_runtime.pool.connection() as conn:
        [dead] = await queue.dead_letters(conn)
        assert (await status_stats.queue_stats(conn))["dead_letters"] == 1
    assert dead["attempts"] == 3 and dead["last_error"] == reason
    [record] = [r for r in caplog.records if r.getMessage().startswith("clip moved to dead")]
    assert (record.clip, record.claims, record.worker) == (str(cid), 3, "survivor")
    assert "claimed 3 times" in record.getMessage()
    assert await w.run_once() == 0


async def test_an_item_survives_one_or_two_lease_expiries(queue_runtime, database_url, fake_openai):
    for expiries in (1, 2):
        [cid] = insert_clips(database_url, 1)
        await claim_and_crash(queue_runtime, database_url, cid, times=expiries, max_claims=3)
        w = worker.Worker(queue_runtime, name=f"w{expiries}")
        w.max_attempts = 3  # with two expiries, this is the last claim the limit allows
        assert await w.run_once() == 1
        assert (w.stats.embedded, w.stats.dead_lettered) == (1, 0)
        vec, text = embedding_of(database_url, cid)
        np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
        assert counters(database_url, cid) is None
    assert dead_letter_rows(database_url) == {}
    assert queue_rows(database_url) == {}


class WorkerKilled(Exception):
    """Stands for the process dying: it escapes the batch, so nothing is completed or failed."""


class KillsItsWorker:
    """The real service, except that a batch containing ``marker`` kills the worker."""

    def __init__(self, real, marker: str) -> None:
        self.real, self.marker = real, marker
        self.model, self.dimensions = real.model, real.dimensions
        self.batches: list[int] = []

    async def embed_detailed(self, texts):
        self.batches.append(len(texts))
        if any(self.marker in t for t in texts):
            raise WorkerKilled
        return await self.real.embed_detailed(texts)


async def test_an_item_that_kills_its_worker_goes_alone_to_the_dead_letters(
    queue_runtime, database_url, fake_openai
):
    ids = insert_clips(database_url, 6)
    poison = ids[2]
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET title = 'OOM bomb' WHERE id = %s", (poison,))
    w = worker.Worker(queue_runtime, name="w", batch_size=10)
    w.max_attempts = 3
    service = w.service = KillsItsWorker(w.service, "OOM bomb")
    crashes = 0
    for _ in range(30):  # bounded: 1 batch + 6 single claims + 2 more crashes + 1 dead letter
        try:
            if await w.run_once() == 0:
                break
        except WorkerKilled:
            crashes += 1  # a new worker process would start; the dead one's leases run out
            expire_leases(database_url)
    else:
        raise AssertionError("the queue never drained")
    assert crashes == 3
    # after the first crash every item is a suspect and is claimed alone: the five innocent
    # ones are embedded, the poison one is dead-lettered without taking them along
    assert service.batches[0] == 6 and all(n == 1 for n in service.batches[1:])
    assert dead_letter_rows(database_url) == {poison: queue.CLAIM_LIMIT_REASON % 3}
    for cid in ids:
        if cid != poison:
            vec, text = embedding_of(database_url, cid)
            np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    assert embedding_of(database_url, poison)[0] is None
    assert queue_rows(database_url) == {}


async def test_recorded_failures_and_edits_reset_the_claims(queue_runtime, database_url):
    [failing] = insert_clips(database_url, 1)
    async with queue_runtime.pool.connection() as conn:
        # a failure the worker recorded is an outcome: the item did not crash its worker
        await claim_and_crash(queue_runtime, database_url, failing, times=1, max_claims=3)
        [item] = (await queue.claim(conn, worker="w", limit=1, lease=60, max_claims=3)).items
        assert (item.clip_id, item.claims) == (failing, 2)
        dead = await queue.fail(
            conn, item, errors.RetryableProviderError("503"), worker="w", max_attempts=3
        )
        assert not dead
    assert counters(database_url, failing)[:2] == (0, 2)  # attempts keep counting

    [edited] = insert_clips(database_url, 1)  # ``failing`` now waits for its backoff
    await claim_and_crash(queue_runtime, database_url, edited, times=2, max_claims=3)
    assert counters(database_url, edited) == (2, 2, 1)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET title = 'a new text' WHERE id = %s", (edited,))
    assert counters(database_url, edited) == (0, 0, 2)  # a new text is a new chance


async def test_failed_retry_starts_a_dead_lettered_item_with_no_claims(
    queue_cli_env, queue_runtime, database_url
):
    [cid] = insert_clips(database_url, 1)
    await claim_and_crash(queue_runtime, database_url, cid, times=2, max_claims=2)
    w = worker.Worker(queue_runtime, name="w")
    w.max_attempts = 2
    assert await w.run_once() == 1 and w.stats.dead_lettered == 1
    assert dead_letter_rows(database_url)[cid] == queue.CLAIM_LIMIT_REASON % 2

    r = await asyncio.to_thread(clipembed_cli, queue_cli_env, "failed", "retry", str(cid))
    assert r.returncode == 0 and "replayed 1" in r.stdout, r.stderr
    assert counters(database_url, cid)[:2] == (0, 0)
    assert dead_letter_rows(database_url) == {}
    # the whole budget again: one more crash, then a worker finishes it
    await claim_and_crash(queue_runtime, database_url, cid, times=1, max_claims=2)
    assert await w.run_once() == 1 and w.stats.embedded == 1
    assert embedding_of(database_url, cid)[0] is not None


async def test_replay_over_a_queued_row_resets_its_claims(queue_runtime, database_url):
    [cid] = insert_clips(database_url, 1)
    await claim_and_crash(queue_runtime, database_url, cid, times=2, max_claims=3)
    with psycopg.connect(database_url) as conn:  # both queued and dead-lettered
        conn.execute(
            "INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at) "
            "VALUES (%s, 2, 'x', now())",
            (cid,),
        )
    async with queue_runtime.pool.connection() as conn:
        assert await queue.replay(conn, [cid]) == 1
    assert counters(database_url, cid)[:2] == (0, 0)
    w = worker.Worker(queue_runtime, name="w")
    w.max_attempts = 1  # one claim left in the budget is enough: the item starts afresh
    assert await w.run_once() == 1 and w.stats.embedded == 1


async def test_a_lost_lease_is_logged_and_its_result_written_once(
    openai_settings, queue_runtime, database_url, fake_openai, caplog
):
    with psycopg.connect(database_url) as conn:
        conn.execute(AUDIT)
    ids = insert_clips(database_url, 4)
    cfg = openai_settings(database_url=database_url, clipembed_queue_lease_seconds=0.6)
    # A's pool has one connection: holding it keeps A's heartbeat (every 0.2 s) from running
    async with runtime.open_runtime(cfg, pool_max_size=1) as rt_a:
        a = worker.Worker(rt_a, name="A", batch_size=10)
        a.service = hold_a = HoldAfterEmbedding(a.service)
        b = worker.Worker(queue_runtime, name="B", batch_size=10)
        b.service = hold_b = HoldAfterEmbedding(b.service)
        with caplog.at_level(logging.WARNING, logger="clipembed.realtime.worker"):
            task_a = asyncio.create_task(a.run_once())
            await wait_for(
                lambda: hold_a.embedded.is_set() or task_a.done(),
                what="worker A to claim the clips and get their vectors",
            )
            assert a.stats.claimed == 4 and not task_a.done()
            async with rt_a.pool.connection():
                # A stalls (its heartbeat cannot reach the database) and its leases run out;
                # B claims one of the clips mid-batch (an item whose lease lapsed is claimed
                # alone: it may be what killed its worker)
                assert expire_leases(database_url) == 4
                task_b = asyncio.create_task(b.run_once())
                await wait_for(
                    lambda: hold_b.embedded.is_set() or task_b.done(),
                    what="worker B to claim a clip A lost and get its vector",
                )
                assert b.stats.claimed == 1 and not task_b.done()
                [taken] = leased_by(database_url, "B")
            await wait_for(
                lambda: a.stats.leases_lost == 1,
                what="A's heartbeat to find the lease B took over",
            )
            # the other three are still A's: its heartbeat renews them, it finishes them
            assert sorted(leased_by(database_url, "A")) == sorted(set(ids) - {taken})
            # A finishes first, with a (correct) vector for the clip it lost: not written
            hold_a.release.set()
            await task_a
            hold_b.release.set()
            await task_b
    assert (a.stats.embedded, a.stats.superseded, a.stats.leases_lost) == (3, 1, 1)
    assert (b.stats.embedded, b.stats.superseded) == (1, 0)
    [lost] = [r for r in caplog.records if r.getMessage().startswith("lease lost")]
    assert (lost.levelno, lost.clip, lost.worker, lost.held_by) == (
        logging.WARNING,
        str(taken),
        "A",
        "B",
    )
    with psycopg.connect(database_url) as conn:
        writes = conn.execute(
            "SELECT clip_id, count(*) FROM embedding_writes GROUP BY clip_id"
        ).fetchall()
    assert dict(writes) == dict.fromkeys(ids, 1)  # exactly one write per clip
    for cid in ids:
        vec, text = embedding_of(database_url, cid)
        np.testing.assert_allclose(vec, expected_vector(text, 768), rtol=1e-6)
    assert queue_rows(database_url) == {}


async def test_migration_0006_down_and_up_again(database_factory):
    url = database_factory.new(dimensions=768)
    [cid] = insert_clips(url, 1)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrations.down(conn, to=5)
        cur = await conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'embedding_queue' AND column_name = 'claims'"
        )
        assert (await cur.fetchone())[0] == 0
        # 0004's trigger function is back: an edit still re-queues without the column
        await conn.execute("UPDATE clips SET title = 'edited at 0005' WHERE id = %s", (cid,))
        cur = await conn.execute(
            "SELECT generation FROM embedding_queue WHERE clip_id = %s", (cid,)
        )
        assert (await cur.fetchone())[0] == 2
        applied = [m.version for m in await migrations.up(conn, dimensions=768)]
        assert applied == [m.version for m in migrations.available() if m.version >= 6]
    assert counters(url, cid) == (0, 0, 2)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE embedding_queue SET claims = 4 WHERE clip_id = %s", (cid,))
        conn.execute("UPDATE clips SET title = 'edited at 0006' WHERE id = %s", (cid,))
    assert counters(url, cid) == (0, 0, 3)
