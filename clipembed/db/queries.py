"""The named SQL the batch jobs run (import, backfill, scheduler, stats), in one place.

One module of named queries (procrastinate's ``sql/queries.sql``) so a reviewer reads every
statement the jobs send without hunting through Python. Nothing here is built from user input:
the only composed parts are column lists taken from our own model and an integer dimension,
both passed through :mod:`psycopg.sql`. Each area keeps its SQL in one module: this one (jobs,
connections, health), ``clipembed.db.migrations`` (its bookkeeping table) and ``schema/*.sql``,
``clipembed.jobs.queue`` (the real-time queue's protocol) and ``clipembed.search.queries``.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

#: The first key of a keyset scan over ``clips.id`` (uuid): every id sorts after it.
FIRST_ID = "00000000-0000-0000-0000-000000000000"

# ---------------------------------------------------------------- import


def upsert_clips(columns: Sequence[str], *, table: sql.Composable | None = None) -> sql.Composed:
    """INSERT ... ON CONFLICT (twitch_clip_id) DO UPDATE for the given columns, one row per call.

    psycopg's ``executemany`` pipelines it: one round trip per batch, not per row. A row equal
    to the stored one is left alone, so re-importing a file writes (and triggers) nothing.
    ``table``: where (default ``clips``; an adopted table, whose triggers bring the rows to
    clipembed), with ``columns`` named as that table names them.
    """
    target = table if table is not None else sql.Identifier("clips")
    updated = [c for c in columns if c != "twitch_clip_id"]
    return sql.SQL(
        "INSERT INTO {table} AS t ({cols}) VALUES ({params}) "
        "ON CONFLICT (twitch_clip_id) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        table=target,
        old=sql.SQL(", ").join(sql.Identifier("t", c) for c in updated),
        new=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in updated),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        params=sql.SQL(", ").join(sql.Placeholder() for _ in columns),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated
        ),
    )


# ---------------------------------------------------------------- backfill


def backfill_page(table: str) -> sql.Composed:
    """One keyset page of live clips with their vector's hash in a space (``%s``: last id, limit).

    A clip waiting in an open Batch API batch of the same space belongs to that batch: no other
    path embeds it (it would be paid twice); the partial index on waiting items makes the check
    one probe.
    """
    return sql.SQL(
        """
SELECT c.id, c.title, c.broadcaster_name, c.creator_name, c.game_name,
       e.content_hash AS embedding_content_hash, e.clip_id IS NULL AS missing
FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id
WHERE NOT c.is_removed AND c.id > %s
  AND NOT EXISTS (
      SELECT 1 FROM embedding_batch_items i JOIN embedding_batches b ON b.id = i.batch_id
      WHERE i.clip_id = c.id AND i.state = 'waiting' AND b.space_id = %s
  )
ORDER BY c.id
LIMIT %s
"""
    ).format(table=sql.Identifier(table))


def backfill_count(table: str) -> sql.Composed:
    """Live clips and those without a vector in the space: the progress bar and the index decision."""
    return sql.SQL(
        "SELECT count(*) AS live, count(*) FILTER (WHERE e.clip_id IS NULL) AS missing"
        " FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id WHERE NOT c.is_removed"
    ).format(table=sql.Identifier(table))


#: Clips of a space waiting in its open Batch API batches (a backfill leaves them to the batch).
WAITING_IN_BATCHES = """
SELECT count(*) FROM embedding_batch_items i JOIN embedding_batches b ON b.id = i.batch_id
WHERE i.state = 'waiting' AND b.state <> 'applied' AND b.space_id = %s
"""

#: Whether a Batch API batch of a space is still open (``--via auto`` then resumes it).
OPEN_BATCH_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM embedding_batches WHERE state <> 'applied' AND space_id = %s)"
)


def create_stage(dimensions: int) -> sql.Composed:
    """A transaction-scoped staging table for one batch's vectors (COPY target)."""
    return sql.SQL(
        "CREATE TEMP TABLE backfill_stage ("
        " id uuid, embedding vector({dims}), content_hash bytea, model text,"
        " title text, broadcaster_name text, creator_name text, game_name text"
        ") ON COMMIT DROP"
    ).format(dims=sql.Literal(int(dimensions)))


COPY_STAGE = (
    "COPY backfill_stage (id, embedding, content_hash, model, title, broadcaster_name, "
    "creator_name, game_name) FROM STDIN WITH (FORMAT BINARY)"
)
#: Binary COPY needs the column types spelled out, in COPY_STAGE's order.
COPY_STAGE_TYPES = ["uuid", "vector", "bytea", "text", "text", "text", "text", "text"]


def apply_stage(table: str, storage: str, dimensions: int) -> sql.Composed:
    """Upsert the staged vectors into a space, only where the clip's text is still what was
    embedded (a clip edited meanwhile keeps its queued re-embedding rather than a stale vector)
    and, unless forced, only where the stored hash differs. Returns the number of clips written.

    ``%(retire)s``: the real-time queue's item for this text is done too (only when this is the
    one space there is: with several, a worker brings the others up to date and retires it).
    """
    return sql.SQL(
        """
WITH written AS (
    INSERT INTO {table} AS e (clip_id, embedding, model, content_hash, generated_at)
    SELECT s.id, s.embedding::{storage}({dims}), s.model, s.content_hash, now()
    FROM backfill_stage s JOIN clips c ON c.id = s.id
    WHERE NOT c.is_removed
      AND c.title = s.title
      AND c.broadcaster_name = s.broadcaster_name
      AND c.creator_name IS NOT DISTINCT FROM s.creator_name
      AND c.game_name IS NOT DISTINCT FROM s.game_name
    ON CONFLICT (clip_id) DO UPDATE
        SET embedding = EXCLUDED.embedding, model = EXCLUDED.model,
            content_hash = EXCLUDED.content_hash, generated_at = EXCLUDED.generated_at
        WHERE %(force)s OR e.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING e.clip_id
), retired AS (
    DELETE FROM embedding_queue q USING written u
    WHERE %(retire)s AND q.clip_id = u.clip_id RETURNING 1
)
SELECT count(*) FROM written
"""
    ).format(
        table=sql.Identifier(table),
        storage=sql.SQL("halfvec" if storage == "halfvec" else "vector"),
        dims=sql.Literal(int(dimensions)),
    )


#: Memory for one-pass HNSW builds: the graph of 100,000 x 768-dim vectors needs ~350 MB.
def index_build_settings(workers: int, memory_mb: int) -> tuple[sql.Composed, ...]:
    """The session settings of an HNSW build: ``memory_mb`` of memory, ``workers`` parallel
    workers (clipembed.jobs.index_policy decides both)."""
    return (
        sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{int(memory_mb)}MB")),
        sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(int(workers))),
    )


#: What the server itself gives maintenance (bytes): a build never takes less.
MAINTENANCE_MEMORY = "SELECT pg_size_bytes(current_setting('maintenance_work_mem'))"


#: How many spaces there are (a backfill retires queue items only when it writes the only one).
SPACE_COUNT = "SELECT count(*) FROM embedding_spaces"

# ---------------------------------------------------------------- scheduler

TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"


def recent_without_embedding(table: str) -> sql.Composed:
    """The original's query, per space: recent live clips without a vector, newest first
    (``%s`` = seconds, limit)."""
    return sql.SQL(
        """
SELECT c.id, c.title, c.broadcaster_name, c.creator_name, c.game_name
FROM clips c
WHERE NOT c.is_removed
  AND c.created_at > now() - make_interval(secs => %s)
  AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.clip_id = c.id)
ORDER BY c.created_at DESC
LIMIT %s
"""
    ).format(table=sql.Identifier(table))


# ---------------------------------------------------------------- stats


def coverage(table: str) -> sql.Composed:
    """The original's monitoring numbers over live clips, for one space."""
    return sql.SQL(
        """
SELECT count(*) AS total_clips,
       count(e.clip_id) AS clips_with_embeddings,
       count(*) FILTER (WHERE e.generated_at > now() - interval '24 hours') AS embedded_last_24h
FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id WHERE NOT c.is_removed
"""
    ).format(table=sql.Identifier(table))


def by_model(table: str) -> sql.Composed:
    return sql.SQL(
        "SELECT coalesce(nullif(e.model, ''), '(none)') AS model, count(*) AS clips"
        " FROM {table} e JOIN clips c ON c.id = e.clip_id WHERE NOT c.is_removed"
        " GROUP BY 1 ORDER BY 2 DESC, 1"
    ).format(table=sql.Identifier(table))


def embedded_page(table: str) -> sql.Composed:
    """One keyset page of embedded clips for the stale count (``%s`` = last id, limit)."""
    return sql.SQL(
        """
SELECT c.id, c.title, c.broadcaster_name, c.creator_name, c.game_name,
       e.content_hash AS embedding_content_hash
FROM clips c JOIN {table} e ON e.clip_id = c.id
WHERE NOT c.is_removed AND c.id > %s
ORDER BY c.id LIMIT %s
"""
    ).format(table=sql.Identifier(table))


# ---------------------------------------------------------------- reconciliation sweep

#: Of the given clip ids, those neither queued nor dead-lettered (``%s`` = uuid[]).
EXCLUDE_KNOWN = """
SELECT id FROM unnest(%s::uuid[]) AS t(id)
WHERE NOT EXISTS (SELECT 1 FROM embedding_queue q WHERE q.clip_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM embedding_dead_letters d WHERE d.clip_id = t.id)
"""

# ---------------------------------------------------------------- connections and health

PING = "SELECT 1"
NO_STATEMENT_TIMEOUT = "SET statement_timeout = 0"
RESET_STATEMENT_TIMEOUT = "RESET statement_timeout"
HAS_PGVECTOR = "SELECT 1 FROM pg_type WHERE typname = 'vector'"
COUNT_CLIPS = "SELECT count(*) FROM clips"
