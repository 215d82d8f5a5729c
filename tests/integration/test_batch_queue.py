"""The Batch API backfill and the worker queue (issue 19): after an import, with a worker that
starts during the batch window, and with lines that keep failing."""

from __future__ import annotations

import pytest

from clipembed import runtime
from clipembed.batches.runner import BatchBackfill
from clipembed.realtime import worker
from tests.integration.test_batch_backfill import assert_correct, rows, settings_for, sql
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.queue import insert_clips

DIMS = 768
CLIPS = 60


@pytest.fixture
async def imported(database_factory, tmp_path):
    """Clips loaded by the importer: its trigger queued every one, and no worker runs."""
    url = database_factory.new(dimensions=DIMS)
    await load_clips(url, [clip_record(i) for i in range(CLIPS)], tmp_path)
    assert sql(url, "SELECT count(*) FROM embedding_queue") == [(CLIPS,)]
    return url


async def test_after_an_import_the_batch_takes_the_queued_clips(
    imported, openai_settings, fake_openai
):
    async with runtime.open_runtime(settings_for(openai_settings, imported)) as rt:
        summary = await BatchBackfill(rt).run()
    stats = fake_openai.stats()
    assert summary.clips_submitted == CLIPS and summary.applied == CLIPS
    assert summary.skipped_held == 0 and summary.dead_lettered == 0
    assert stats["requests"] == 0  # not one synchronous request: all at the batch price
    assert summary.cost_usd == pytest.approx(summary.sync_cost_usd / 2)
    for row in rows(imported):
        assert_correct(row)
    # one space: the applied vectors retired their queue items; nothing is left for a worker
    assert sql(imported, "SELECT count(*) FROM embedding_queue") == [(0,)]


async def test_a_worker_started_in_the_batch_window_embeds_nothing_twice(
    imported, openai_settings, fake_openai
):
    # a worker holds one clip before the backfill starts: the batch leaves it to that worker
    (held,) = sql(imported, "SELECT clip_id FROM embedding_queue ORDER BY clip_id LIMIT 1")[0]
    sql(
        imported,
        "UPDATE embedding_queue SET leased_until = now() + interval '1 hour', leased_by = 'other'"
        " WHERE clip_id = %s",
        (held,),
    )
    fake_openai.control(batch_mode="manual")
    cfg = settings_for(openai_settings, imported)
    async with runtime.open_runtime(cfg) as rt:
        runner = BatchBackfill(rt)
        await runner.run(wait=False)
        assert runner.summary.clips_submitted == CLIPS - 1
        assert runner.summary.skipped_held == 1
        items = {r[0] for r in sql(imported, "SELECT clip_id FROM embedding_batch_items")}
        assert held not in items and len(items) == CLIPS - 1
        parked = sql(imported, "SELECT count(*) FROM embedding_queue WHERE in_batch IS NOT NULL")
        assert parked == [(CLIPS - 1,)]

        # a worker starts now: the parked clips are not its to take; a new clip is
        w = worker.Worker(rt, name="late")
        assert await w.run_once() == 0
        (new_id,) = insert_clips(imported, 1, prefix="during")
        assert await w.run_once() == 1 and w.stats.embedded == 1
        assert fake_openai.stats()["inputs"] == 1  # the new clip only, synchronously

        (provider_id,) = sql(imported, "SELECT provider_batch_id FROM embedding_batches")[0]
        fake_openai.control(batch_complete=provider_id)
        summary = await runner.run()
        assert await w.run_once() == 0  # nothing given back that is not already embedded
    stats = fake_openai.stats()
    assert summary.applied == CLIPS - 1
    assert stats["embedded_more_than_once"] == 0, stats["embedded_counts"]
    assert stats["batch_inputs"] == CLIPS - 1
    for row in rows(imported):
        if row[0] != held:
            assert_correct(row)
    # the held clip is still the other worker's; nothing else waits
    assert sql(imported, "SELECT clip_id FROM embedding_queue") == [(held,)]
    assert new_id != held


async def test_lines_that_keep_failing_end_synchronously(imported, openai_settings, fake_openai):
    fake_openai.control(batch_fail_rate=1.0)  # every line of every batch fails
    async with runtime.open_runtime(settings_for(openai_settings, imported)) as rt:
        summary = await BatchBackfill(rt).run()
    stats = fake_openai.stats()
    assert stats["batches_created"] == 2  # the failed texts were tried in one more batch
    assert summary.failed_lines == 2 * CLIPS
    assert summary.sync_inputs == CLIPS and summary.sync_embedded == CLIPS
    assert stats["inputs"] == CLIPS  # synchronous inputs: the failed lines, no more
    assert summary.dead_lettered == 0
    for row in rows(imported):
        assert_correct(row)
    assert sql(imported, "SELECT count(*) FROM embedding_queue") == [(0,)]


async def test_without_the_sync_fallback_they_are_dead_lettered_with_their_reason(
    imported, openai_settings, fake_openai
):
    fake_openai.control(batch_fail_rate=1.0, batch_fail_status=400)
    async with runtime.open_runtime(settings_for(openai_settings, imported)) as rt:
        summary = await BatchBackfill(rt, sync_fallback=False).run()
    assert summary.dead_lettered == CLIPS and summary.sync_inputs == 0
    assert fake_openai.stats()["requests"] == 0
    dead = sql(imported, "SELECT last_error FROM embedding_dead_letters")
    assert len(dead) == CLIPS
    assert all("2 Batch API batches" in reason and "400" in reason for (reason,) in dead), dead[0]
    assert sql(imported, "SELECT count(*) FROM embedding_queue") == [(0,)]
