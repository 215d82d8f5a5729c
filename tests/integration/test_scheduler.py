"""The scheduler's cycle and loop on a real database, through the fake provider."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import pytest

from clipembed import runtime
from clipembed.db import connection
from clipembed.realtime import scheduler
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.waiting import wait_for


def embedded(database_url):
    with psycopg.connect(database_url) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT twitch_clip_id FROM clips WHERE embedding IS NOT NULL"
            ).fetchall()
        }


def ago(**delta) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).isoformat()


@pytest.fixture
async def scheduler_runtime(openai_settings, database_url):
    cfg = openai_settings(
        database_url=database_url,
        embedding_scheduler_window_days=7,
        embedding_scheduler_limit=3,
        embedding_scheduler_interval_minutes=0.005,  # 0.3 s
    )
    async with runtime.open_runtime(cfg) as rt:
        yield rt


async def test_cycle_takes_the_newest_recent_unembedded_live_clips_up_to_the_limit(
    scheduler_runtime, database_url, tmp_path
):
    await load_clips(
        database_url,
        [
            clip_record(1, created_at=ago(hours=1)),
            clip_record(2, created_at=ago(hours=2)),
            clip_record(3, created_at=ago(days=3)),
            clip_record(4, created_at=ago(days=6)),
            clip_record(5, created_at=ago(days=8)),  # outside the window
            clip_record(6, created_at=ago(minutes=5), is_removed=True),  # removed
        ],
        tmp_path,
    )
    first = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
    assert first.ran and (first.found, first.embedded, first.failed) == (3, 3, 0)
    assert embedded(database_url) == {"Clip1", "Clip2", "Clip3"}  # newest first
    second = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
    assert (second.found, second.embedded) == (1, 1)
    assert embedded(database_url) == {"Clip1", "Clip2", "Clip3", "Clip4"}
    third = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
    assert (third.found, third.embedded) == (0, 0)


async def test_another_replica_holding_the_lock_skips_the_cycle(
    scheduler_runtime, database_url, tmp_path
):
    await load_clips(database_url, [clip_record(1)], tmp_path)
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute(connection.TRY_LOCK, (scheduler.LOCK_KEY,))
        skipped = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
        assert skipped.ran is False and not embedded(database_url)
        # released explicitly: closing the connection frees the lock only once the server
        # process has exited, which may be after the next cycle tries to take it
        assert other.execute(connection.UNLOCK, (scheduler.LOCK_KEY,)).fetchone()[0] is True
    ran = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
    assert ran.ran and ran.embedded == 1


async def test_provider_failures_are_counted_and_the_loop_goes_on(
    scheduler_runtime, database_url, fake_openai, tmp_path
):
    await load_clips(database_url, [clip_record(1), clip_record(2)], tmp_path)
    fake_openai.control(fail_rate_500=1.0)
    failed = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
    assert failed.failed == 2 and failed.embedded == 0 and failed.last_error
    fake_openai.control(fail_rate_500=0.0)
    healed = await scheduler.run_cycle(scheduler_runtime, reconcile=False)
    assert healed.embedded == 2


async def test_loop_runs_at_start_then_every_interval_and_stops_on_request(
    scheduler_runtime, database_url, tmp_path
):
    await load_clips(database_url, [clip_record(i) for i in range(7)], tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run_scheduler(scheduler_runtime, stop))
    try:
        await wait_for(  # 7 clips at 3 per cycle: three cycles, 0.3 s apart
            lambda: len(embedded(database_url)) == 7 or task.done(),
            timeout=20,
            interval=0.1,
            what="the scheduler loop to embed all 7 clips",
        )
        assert not task.done(), task
    finally:
        stop.set()
    results = await asyncio.wait_for(task, timeout=30)
    assert len(embedded(database_url)) == 7
    assert len(results) >= 3 and sum(r.embedded for r in results) == 7
    assert scheduler.describe(results)["embedded"] == 7


async def test_once_runs_one_cycle(scheduler_runtime, database_url, tmp_path):
    await load_clips(database_url, [clip_record(i) for i in range(5)], tmp_path)
    results = await scheduler.run_scheduler(scheduler_runtime, asyncio.Event(), once=True)
    assert len(results) == 1 and results[0].embedded == 3


async def test_a_stop_requested_before_start_runs_nothing(scheduler_runtime):
    stop = asyncio.Event()
    stop.set()
    assert await scheduler.run_scheduler(scheduler_runtime, stop) == []
