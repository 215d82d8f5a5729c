"""``backfill --via batch`` against the fake provider's Files and Batch APIs over real HTTP."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import clips, runtime
from clipembed.batches.runner import BatchBackfill
from clipembed.status import stats as stats_mod
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.jobs import clip_record, load_clips

DIMS = 768


def rows(url):
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return conn.execute(
            "SELECT id, title, broadcaster_name, creator_name, game_name, embedding, "
            "embedding_model, embedding_content_hash FROM clips WHERE NOT is_removed ORDER BY id"
        ).fetchall()


def assert_correct(row, model="text-embedding-3-small"):
    _, title, broadcaster, creator, game, embedding, stored_model, digest = row
    text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
    assert embedding is not None, title
    np.testing.assert_allclose(embedding.to_numpy(), expected_vector(text, DIMS), atol=1e-6)
    assert stored_model == model and bytes(digest) == clips.content_hash(text, model, DIMS)


def sql(url, statement, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


@pytest.fixture
async def db(database_factory, tmp_path):
    url = database_factory.new(dimensions=DIMS)
    await load_clips(url, [clip_record(i) for i in range(60)], tmp_path)
    sql(url, "DELETE FROM embedding_queue")  # the backlog of a bulk load, not real-time work
    return url


def settings_for(openai_settings, url, **overrides):
    values = {
        "database_url": url,
        "embedding_batch_size": 7,  # several request lines per batch file
        "embedding_batch_poll_seconds": 0.05,
        **overrides,
    }
    return openai_settings(**values)


async def test_a_complete_batch_backfill_at_half_price_with_no_sync_requests(
    db, openai_settings, fake_openai
):
    before = fake_openai.stats()
    async with runtime.open_runtime(settings_for(openai_settings, db)) as rt:
        summary = await BatchBackfill(rt).run()
    stats = fake_openai.stats()
    assert summary.applied == 60 and summary.failed_lines == 0 and summary.open_batches == 0
    assert stats["requests"] == before["requests"]  # not one synchronous embeddings request
    assert stats["batches_created"] == 1 and stats["input_files_batched_more_than_once"] == 0
    assert summary.cost_usd == pytest.approx(summary.sync_cost_usd / 2)
    for row in rows(db):
        assert_correct(row)
    # a second run finds nothing to do
    async with runtime.open_runtime(settings_for(openai_settings, db)) as rt:
        again = await BatchBackfill(rt).run()
    assert again.batches_submitted == 0 and fake_openai.stats()["batches_created"] == 1
    batches = sql(db, "SELECT state, applied, clips FROM embedding_batches")
    assert batches == [("applied", 60, 60)]
    async with runtime.open_runtime(settings_for(openai_settings, db), with_service=False) as rt:
        figures = (await stats_mod.collect(rt.pool, model=rt.settings.model, dimensions=DIMS))[
            "batches"
        ]
    assert figures["by_state"] == {"applied": 1} and figures["clips_waiting"] == 0
    assert figures["saving_usd"] == pytest.approx(
        summary.sync_cost_usd - summary.cost_usd, abs=1e-6
    )


async def test_failed_lines_are_planned_again_by_the_same_run_and_an_edit_is_never_overwritten(
    db, openai_settings, fake_openai
):
    fake_openai.control(batch_mode="manual", batch_fail_lines=["b1-r2"])
    cfg = settings_for(openai_settings, db)
    async with runtime.open_runtime(cfg) as rt:
        runner = BatchBackfill(rt)
        await runner.run(wait=False)  # planned, uploaded, submitted; the provider works on it
        (provider_id,) = sql(db, "SELECT provider_batch_id FROM embedding_batches")[0]
        # an edit during the window (of a clip on a line that does not fail): not stored
        ((edited_id,),) = sql(
            db,
            "SELECT c.twitch_clip_id FROM embedding_batch_items i JOIN clips c ON c.id = i.clip_id"
            " WHERE i.custom_id <> 'b1-r2' ORDER BY i.custom_id, i.position LIMIT 1",
        )
        sql(
            db,
            "UPDATE clips SET title = 'edited in the window' WHERE twitch_clip_id = %s",
            (edited_id,),
        )
        fake_openai.control(batch_complete=provider_id)
        fake_openai.control(batch_mode="instant")  # the run's second batch completes at once
        requests = fake_openai.stats()["requests"]
        summary = await runner.run()
    assert summary.failed_lines == 7  # one request line of 7 inputs failed in the first batch
    assert summary.superseded == 1
    stats = fake_openai.stats()
    assert stats["batches_created"] == 2  # the 7 failed texts went into a second batch...
    items = sql(db, "SELECT count(*) FROM embedding_batch_items WHERE batch_id = 2")
    assert items == [(8,)]  # ...with the edited clip's new text
    assert stats["requests"] == requests and summary.sync_inputs == 0
    assert summary.dead_lettered == 0
    assert sql(db, "SELECT count(*) FROM embedding_queue") == [(0,)]
    edited = [r for r in rows(db) if r[1] == "edited in the window"]
    assert len(edited) == 1
    for row in rows(db):
        assert_correct(row)  # the edited clip holds its new text's vector, never the old one
    assert stats["embedded_more_than_once"] == 0


async def test_an_expired_batch_keeps_finished_lines_and_re_plans_the_rest(
    db, openai_settings, fake_openai
):
    fake_openai.control(batch_mode="manual")
    cfg = settings_for(openai_settings, db)
    async with runtime.open_runtime(cfg) as rt:
        runner = BatchBackfill(rt)
        await runner.run(wait=False)
        (provider_id,) = sql(db, "SELECT provider_batch_id FROM embedding_batches")[0]
        fake_openai.control(batch_process={provider_id: 3})  # 3 lines of 9 done in time
        fake_openai.control(batch_expire=provider_id)
        fake_openai.control(batch_mode="instant")
        summary = await runner.run()
    assert summary.released == 60 - 21  # the unanswered clips went into a second batch
    assert fake_openai.stats()["batches_created"] == 2
    for row in rows(db):
        assert_correct(row)


async def test_a_failed_batch_is_re_planned(db, openai_settings, fake_openai):
    fake_openai.control(batch_max_lines=2)  # our 9-line file fails validation
    cfg = settings_for(openai_settings, db)
    async with runtime.open_runtime(cfg) as rt:
        runner = BatchBackfill(rt)
        await runner.advance_open()
        await runner.plan_and_submit(None)
        await runner.advance_open()  # validation failed: released
        (state, error) = sql(db, "SELECT state, last_error FROM embedding_batches ORDER BY id")[0]
        assert state == "applied" and error
        fake_openai.control(batch_max_lines=50_000)
        summary = await runner.run()
    assert summary.applied == 60
    for row in rows(db):
        assert_correct(row)


async def test_the_enqueued_token_limit_is_never_exceeded(db, openai_settings, fake_openai):
    fake_openai.control(batch_mode="manual")
    cfg = settings_for(openai_settings, db, embedding_batch_queue_tokens=200)
    async with runtime.open_runtime(cfg) as rt:
        runner = BatchBackfill(rt)
        await runner.run(wait=False)
        enqueued = sql(
            db, "SELECT coalesce(sum(tokens), 0) FROM embedding_batches WHERE state <> 'applied'"
        )[0][0]
        assert 0 < enqueued <= 200
        fake_openai.control(batch_mode="instant")
        for (pid,) in sql(
            db,
            "SELECT provider_batch_id FROM embedding_batches WHERE provider_batch_id IS NOT NULL",
        ):
            fake_openai.control(batch_complete=pid)
        summary = await runner.run()
    assert summary.applied + 0 >= 1
    assert sql(db, "SELECT count(*) FROM clips WHERE embedding IS NULL")[0][0] == 0
    assert sql(db, "SELECT max(tokens) FROM embedding_batches")[0][0] <= 200
