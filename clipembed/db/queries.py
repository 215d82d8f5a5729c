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


def upsert_clips(columns: Sequence[str]) -> sql.Composed:
    """INSERT ... ON CONFLICT (twitch_clip_id) DO UPDATE for the given columns, one row per call.

    psycopg's ``executemany`` pipelines it: one round trip per batch, not per row. A row equal
    to the stored one is left alone, so re-importing a file writes (and triggers) nothing.
    """
    updated = [c for c in columns if c != "twitch_clip_id"]
    return sql.SQL(
        "INSERT INTO clips ({cols}) VALUES ({params}) "
        "ON CONFLICT (twitch_clip_id) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        old=sql.SQL(", ").join(sql.Identifier("clips", c) for c in updated),
        new=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in updated),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        params=sql.SQL(", ").join(sql.Placeholder() for _ in columns),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated
        ),
    )


# ---------------------------------------------------------------- backfill

#: One keyset page of live clips with what the staleness rule needs (``%s`` = last id, limit).
#: A clip waiting in an open Batch API batch belongs to that batch: no other path embeds it
#: (it would be paid twice); the partial index on waiting items makes the check one probe.
BACKFILL_PAGE = """
SELECT id, title, broadcaster_name, creator_name, game_name, embedding_model,
       embedding_content_hash, embedding IS NULL AS missing
FROM clips
WHERE NOT is_removed AND id > %s
  AND NOT EXISTS (
      SELECT 1 FROM embedding_batch_items i WHERE i.clip_id = clips.id AND i.state = 'waiting'
  )
ORDER BY id
LIMIT %s
"""

#: Live clips and those without any vector: sizes the progress bar and the index decision.
BACKFILL_COUNT = """
SELECT count(*) AS live,
       count(*) FILTER (WHERE embedding IS NULL) AS missing
FROM clips WHERE NOT is_removed
"""

#: Whether a Batch API batch is still open (``--via auto`` then resumes it).
OPEN_BATCH_EXISTS = "SELECT EXISTS (SELECT 1 FROM embedding_batches WHERE state <> 'applied')"


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

#: Apply the staged vectors, only where the clip's text is still what was embedded (a clip edited
#: meanwhile keeps its queued re-embedding rather than a stale vector) and, unless forced, only
#: where no worker brought it up to date meanwhile. Returns the number of clips written.
APPLY_STAGE = """
WITH updated AS (
    UPDATE clips c
    SET embedding = s.embedding,
        embedding_content_hash = s.content_hash,
        embedding_model = s.model,
        embedding_generated_at = now()
    FROM backfill_stage s
    WHERE c.id = s.id
      AND NOT c.is_removed
      AND c.title = s.title
      AND c.broadcaster_name = s.broadcaster_name
      AND c.creator_name IS NOT DISTINCT FROM s.creator_name
      AND c.game_name IS NOT DISTINCT FROM s.game_name
      AND (%(force)s OR c.embedding IS NULL OR c.embedding_model IS DISTINCT FROM s.model
           OR c.embedding_content_hash IS DISTINCT FROM s.content_hash)
    RETURNING c.id
), retired AS (
    -- the real-time queue's item for this text is done too
    DELETE FROM embedding_queue q USING updated u WHERE q.clip_id = u.id RETURNING 1
)
SELECT count(*) FROM updated
"""

HNSW_INDEX = "idx_clips_embedding_hnsw"
#: Same definition as migration 0002 (m=16, ef_construction=64).
CREATE_HNSW = sql.SQL(
    "CREATE INDEX IF NOT EXISTS {name} ON clips "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
).format(name=sql.Identifier(HNSW_INDEX))
DROP_HNSW = sql.SQL("DROP INDEX IF EXISTS {name}").format(name=sql.Identifier(HNSW_INDEX))
HNSW_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
#: Memory for one-pass HNSW builds: the graph of 100,000 x 768-dim vectors needs ~350 MB.
INDEX_BUILD_SETTINGS = (
    "SET maintenance_work_mem = '1GB'",
    "SET max_parallel_maintenance_workers = 2",
)

# ---------------------------------------------------------------- scheduler

TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"

#: The original's query: recent live clips without a vector, newest first (``%s`` = seconds, limit).
RECENT_WITHOUT_EMBEDDING = """
SELECT id, title, broadcaster_name, creator_name, game_name
FROM clips
WHERE NOT is_removed
  AND embedding IS NULL
  AND created_at > now() - make_interval(secs => %s)
ORDER BY created_at DESC
LIMIT %s
"""

# ---------------------------------------------------------------- stats

#: The original's monitoring numbers over live clips.
COVERAGE = """
SELECT count(*) AS total_clips,
       count(embedding) AS clips_with_embeddings,
       count(*) FILTER (WHERE embedding_generated_at > now() - interval '24 hours')
           AS embedded_last_24h
FROM clips WHERE NOT is_removed
"""

BY_MODEL = """
SELECT coalesce(embedding_model, '(none)') AS model, count(*) AS clips
FROM clips WHERE NOT is_removed AND embedding IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1
"""

#: One keyset page of embedded clips for the stale count (``%s`` = last id, limit).
EMBEDDED_PAGE = """
SELECT id, title, broadcaster_name, creator_name, game_name, embedding_model,
       embedding_content_hash
FROM clips WHERE NOT is_removed AND embedding IS NOT NULL AND id > %s
ORDER BY id LIMIT %s
"""

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
