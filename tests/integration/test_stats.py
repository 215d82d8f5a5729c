"""clipembed stats against known counts."""

from __future__ import annotations

import psycopg

from clipembed.jobs import stats, worker
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
            "UPDATE clips SET embedding_generated_at = now() - interval '2 days' WHERE id = %s",
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
