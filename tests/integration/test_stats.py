"""clipembed stats against known counts."""

from __future__ import annotations

import psycopg

from clipembed.realtime import worker
from clipembed.status import stats
from tests.plugins.queue import insert_clips


async def test_stats_known_counts(queue_runtime, database_url):
    ids = insert_clips(database_url, 10)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE clips SET is_removed = true WHERE id = ANY(%s)", (ids[:2],))
    await worker.Worker(
        queue_runtime, name="w", batch_size=3
    ).run_once()  # embeds 3 of the 8 live clips
    with psycopg.connect(database_url) as conn:
        embedded = [r[0] for r in conn.execute("SELECT id FROM clips WHERE embedding IS NOT NULL")]
        assert len(embedded) == 3
        # one embedded clip edited without the trigger firing: its embedding is now stale
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE clips SET title = 'edited behind our back' WHERE id = %s", (embedded[0],)
        )
        conn.execute(
            "UPDATE embeddings_space_1 SET generated_at = now() - interval '2 days' "
            "WHERE clip_id = %s",
            (embedded[1],),
        )
    s = await stats.collect(queue_runtime.pool, model="text-embedding-3-small", dimensions=768)
    assert s["total_clips"] == 8
    assert s["clips_with_embeddings"] == 3
    assert s["coverage_percentage"] == 37.5
    assert s["embedded_last_24h"] == 2
    assert s["stale_embeddings"] == 1 and s["current_embeddings"] == 2
    assert s["by_model"] == {"text-embedding-3-small": 3}
    assert s["queue"]["pending"] == 5 and s["queue"]["dead_letters"] == 0
    assert "Coverage:               37.50%" in stats.lines(s)


async def test_stats_on_an_empty_table(jobs_runtime):
    s = await stats.collect(jobs_runtime.pool, model="text-embedding-3-small", dimensions=768)
    assert (s["total_clips"], s["clips_with_embeddings"], s["coverage_percentage"]) == (0, 0, 0.0)
    assert s["stale_embeddings"] == 0 and s["by_model"] == {}


async def test_stats_after_a_backfill_and_a_model_change(jobs_runtime, database_url, tmp_path):
    from clipembed.bulk import backfill
    from tests.plugins.jobs import clip_record, load_clips

    await load_clips(database_url, [clip_record(i) for i in range(12)], tmp_path)
    await backfill.run(jobs_runtime, limit=10)
    with psycopg.connect(database_url) as conn:
        # four vectors made by another model (its name, and so another content hash)
        conn.execute(
            "UPDATE embeddings_space_1 SET model = 'text-embedding-ada-002', content_hash = 'x' "
            "WHERE clip_id IN (SELECT clip_id FROM embeddings_space_1 ORDER BY clip_id LIMIT 4)"
        )
    s = await stats.collect(jobs_runtime.pool, model="text-embedding-3-small", dimensions=768)
    assert s["total_clips"] == 12 and s["clips_with_embeddings"] == 10
    assert s["coverage_percentage"] == 83.33 and s["embedded_last_24h"] == 10
    assert s["stale_embeddings"] == 4 and s["current_embeddings"] == 6
    assert s["by_model"] == {"text-embedding-3-small": 6, "text-embedding-ada-002": 4}
    # the same numbers at another dimension: every embedding is stale
    other = await stats.collect(jobs_runtime.pool, model="text-embedding-3-small", dimensions=512)
    assert other["stale_embeddings"] == 10
