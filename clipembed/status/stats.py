"""``clipembed stats``: the original's monitoring queries, plus staleness, models and the queue.

Two figures are called "stale" on purpose, and they count different things:
``stale_embeddings`` here recomputes every stored vector's content hash from its clip's text and
the space's model and dimensions (a keyset scan of the whole space: seconds at a million clips),
so it also catches vectors a configuration change made stale; the status model's ``stale``
(:mod:`clipembed.status.model`, the console, ``/status``) reads the queue's flag the enqueue
trigger sets when an embedded clip's text changes (one count over the queue: milliseconds), so
it sees edits only. This module lives beside the status model and reads the same tables through
the same store modules; the scan stays here, where an operator asks for it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from clipembed import clips, metrics, spaces
from clipembed.db import connection
from clipembed.source import adoption
from clipembed.store import batch_tables, clip_table, queue_table, space_table

STALE_PAGE = 5000  # rows per keyset page of the stale count


async def queue_stats(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """The real-time queue's figures: pending, leased, in a batch, the oldest wait, dead letters."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queue_table.STATS)
        row = await cur.fetchone() or {}
    await conn.commit()
    return {
        "pending": int(row.get("pending", 0)),
        "leased": int(row.get("leased", 0)),
        "in_batch": int(row.get("in_batch", 0)),
        "oldest_pending_seconds": float(row.get("oldest_pending_seconds", 0.0)),
        "dead_letters": int(row.get("dead_letters", 0)),
    }


async def count_stale(pool: AsyncConnectionPool, *, model: str, dimensions: int, table: str) -> int:
    """Vectors in a space whose text/model/dimension hash no longer matches (keyset scan)."""
    stale = 0
    last: Any = clip_table.FIRST_ID
    stmt = space_table.embedded_page(table)
    while True:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(stmt, (last, STALE_PAGE))
            rows = await cur.fetchall()
        if not rows:
            return stale
        for row in rows:
            text = clips.embedding_text(clips.ClipText.from_row(row))
            current = clips.content_hash(text, model, dimensions)
            stored = row["embedding_content_hash"]
            if stored is None or bytes(stored) != current:
                stale += 1
        last = rows[-1]["id"]


async def collect(
    pool: AsyncConnectionPool,
    *,
    model: str,
    dimensions: int,
    space: spaces.Space | None = None,
) -> dict[str, Any]:
    """The figures of one embedding space (default: the active one, which ``model`` and
    ``dimensions`` must describe)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        if space is None:
            space = await spaces.active(conn)
        await cur.execute(space_table.coverage(space.table_name))
        row = await cur.fetchone() or {}
        await cur.execute(space_table.by_model(space.table_name))
        models = {r["model"]: r["clips"] for r in await cur.fetchall()}
    total = int(row.get("live", 0))
    with_embeddings = int(row.get("embedded", 0))
    stale = await count_stale(pool, model=model, dimensions=dimensions, table=space.table_name)
    out: dict[str, Any] = {
        "total_clips": total,
        "clips_with_embeddings": with_embeddings,
        "coverage_percentage": round(with_embeddings * 100.0 / total, 2) if total else 0.0,
        "embedded_last_24h": int(row.get("embedded_last_24h", 0)),
        "stale_embeddings": stale,
        "current_embeddings": with_embeddings - stale,
        "by_model": models,
        "model": model,
        "dimensions": dimensions,
        "space": space.name,
    }
    async with pool.connection() as conn:
        out["queue"] = await queue_stats(conn)
    async with pool.connection() as conn:
        rows = await (await conn.execute(batch_tables.SUMMARY)).fetchall()
        waiting = (await (await conn.execute(batch_tables.WAITING_CLIPS)).fetchone() or (0,))[0]
    if rows:
        out["batches"] = {
            "by_state": {r[0]: int(r[1]) for r in rows},
            "clips_waiting": int(waiting),
            "tokens": sum(int(r[3]) for r in rows),
            "cost_usd": round(sum(float(r[4]) for r in rows), 6),
            "saving_usd": round(sum(float(r[5]) - float(r[4]) for r in rows), 6),
        }
    async with pool.connection() as conn:
        adopted = await adoption.load(conn)
        if adopted is not None:
            foreign, missing = await adoption.mirror_state(conn, adopted)
            out["adopted"] = {
                "table": adopted.mapping.qualified,
                "hidden_when": list(adopted.hidden),
                "foreign_vectors": foreign,
                "mirror_missing": missing,
                "foreign_policy": adopted.mapping.foreign_vectors,
            }
            # a vector another writer replaced, or one emptied from the table, is not current
            # for the table's readers: `clipembed backfill` restores it (no provider call)
            out["current_embeddings"] = max(0, out["current_embeddings"] - foreign - missing)
            stale += foreign + missing
    metrics.COVERAGE.set(max(0, with_embeddings - stale) / total if total else 1.0)
    return out


def lines(stats: dict[str, Any]) -> list[str]:
    out = [
        f"Total clips:            {stats['total_clips']}",
        f"Clips with embeddings:  {stats['clips_with_embeddings']}",
        f"Coverage:               {stats['coverage_percentage']:.2f}%",
        f"Embedded in last 24h:   {stats['embedded_last_24h']}",
        f"Stale embeddings:       {stats['stale_embeddings']}",
        f"Model in use:           {stats['model']} ({stats['dimensions']} dims)",
    ]
    for model, count in stats["by_model"].items():
        out.append(f"  {model}: {count}")
    queue = stats.get("queue")
    if queue:
        out += [
            f"Queue pending:          {queue['pending']}",
            f"Queue leased:           {queue['leased']}",
            f"Oldest pending:         {queue['oldest_pending_seconds']:.1f}s",
            f"Dead letters:           {queue['dead_letters']}",
        ]
    adopted = stats.get("adopted")
    if adopted:
        out += [
            f"Adopted table:          {adopted['table']}"
            f" (hidden when: {', '.join(adopted['hidden_when']) or 'no flag'})",
            f"Foreign vectors:        {adopted['foreign_vectors']}"
            f" (written by another writer; policy: {adopted['foreign_policy']})",
            f"Vectors missing there:  {adopted['mirror_missing']}"
            " (clipembed holds them: `clipembed backfill` restores them)",
        ]
    batches = stats.get("batches")
    if batches:
        states = ", ".join(f"{n} {state}" for state, n in sorted(batches["by_state"].items()))
        out += [
            f"Batch API batches:      {states}",
            f"Clips waiting in them:  {batches['clips_waiting']}",
            f"Batch tokens / cost:    {batches['tokens']} / ${batches['cost_usd']:.4f}"
            f" (saved ${batches['saving_usd']:.4f} against the sync price)",
        ]
    if "replica_lag_seconds" in stats:
        lag = stats["replica_lag_seconds"]
        shown = "unknown (nothing replayed yet)" if lag is None else f"{lag:.1f}s"
        out.append(f"Search replica lag:     {shown}")
    return out


# On a hot standby: 0 when every WAL record received is replayed (nothing waits, even if the
# primary has been idle for hours), else the age of the last replayed transaction. On a server
# that is not in recovery (SEARCH_DATABASE_URL naming the primary): 0. NULL: nothing replayed yet.
REPLICA_LAG = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0.0
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0
    ELSE greatest(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0.0)::float8
END
"""


async def replica_lag(url: str) -> float | None:
    """Seconds the search replica at ``url`` is behind its primary (see REPLICA_LAG)."""
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        cur = await conn.execute(REPLICA_LAG)
        row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    return round(float(row[0]), 3)
