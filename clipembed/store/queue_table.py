"""The real-time queue (``embedding_queue``, ``embedding_dead_letters``): claim, extend,
complete, fail, enqueue, replay. The protocol they implement is :mod:`clipembed.realtime.queue`."""

from __future__ import annotations

from clipembed.store.clip_table import TEXT_COLUMNS

#: The channel a worker LISTENs on: every enqueue notifies it.
CHANNEL = "clipembed_queue"

#: Of the given clip ids, those neither queued nor dead-lettered (``%s`` = uuid[]).
EXCLUDE_KNOWN = """
SELECT id FROM unnest(%s::uuid[]) AS t(id)
WHERE NOT EXISTS (SELECT 1 FROM embedding_queue q WHERE q.clip_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM embedding_dead_letters d WHERE d.clip_id = t.id)
"""

# One statement, one short transaction. ``candidates`` locks up to ``limit`` ready rows (SKIP
# LOCKED: rows another claimer holds are not waited for). Of those, the rows already claimed
# ``max_claims`` times without finishing are moved to the dead letters instead of being claimed
# again; of the rest, a *suspect* (claimed before without finishing: it may be what killed its
# worker) at the head of the queue is claimed alone, otherwise only clean rows are claimed, so a
# poison item cannot take the other items of its batch to the dead letters with it. Locked
# candidates not claimed are released at commit.
CLAIM = """
WITH candidates AS (
    SELECT clip_id, claims, next_attempt_at, enqueued_at FROM embedding_queue
    WHERE next_attempt_at <= now() AND (leased_until IS NULL OR leased_until < now())
      AND in_batch IS NULL  -- parked: a Batch API batch embeds this text (migration 0011)
    ORDER BY next_attempt_at, enqueued_at
    FOR UPDATE SKIP LOCKED
    LIMIT %(limit)s
),
exhausted AS (
    DELETE FROM embedding_queue q
    USING candidates c
    WHERE q.clip_id = c.clip_id AND c.claims >= %(max_claims)s
    RETURNING q.clip_id, q.attempts, q.claims, q.enqueued_at
),
buried AS (
    INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at)
    SELECT clip_id, attempts, format(%(reason)s, claims), enqueued_at FROM exhausted
    ON CONFLICT (clip_id) DO UPDATE
        SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now()
),
live AS (
    SELECT clip_id, claims, next_attempt_at, enqueued_at FROM candidates
    WHERE claims < %(max_claims)s
),
head AS (
    SELECT clip_id, claims FROM live ORDER BY next_attempt_at, enqueued_at, clip_id LIMIT 1
),
picked AS (
    SELECT l.clip_id FROM live l CROSS JOIN head h
    WHERE CASE WHEN h.claims > 0 THEN l.clip_id = h.clip_id ELSE l.claims = 0 END
),
claimed AS (
    UPDATE embedding_queue q
    SET leased_until = now() + make_interval(secs => %(lease)s),
        leased_by = %(worker)s,
        attempts = q.attempts + 1,
        claims = q.claims + 1
    FROM picked
    WHERE q.clip_id = picked.clip_id
    RETURNING q.clip_id, q.generation, q.attempts, q.claims, q.enqueued_at
)
SELECT true AS claimed, clip_id, generation, attempts, claims, enqueued_at FROM claimed
UNION ALL
SELECT false, clip_id, NULL, attempts, claims, enqueued_at FROM exhausted
"""

# Extends the leases still ours and reports, per id, whether it did and who holds the row now
# (the outer SELECT sees the rows as they were before the UPDATE: another holder, or none when
# the row is gone).
EXTEND = """
WITH extended AS (
    UPDATE embedding_queue SET leased_until = now() + make_interval(secs => %(lease)s)
    WHERE clip_id = ANY(%(ids)s) AND leased_by = %(worker)s
    RETURNING clip_id
)
SELECT i.id, e.clip_id IS NOT NULL, q.leased_by
FROM unnest(%(ids)s::uuid[]) AS i (id)
LEFT JOIN extended e ON e.clip_id = i.id
LEFT JOIN embedding_queue q ON q.clip_id = i.id
"""

# Completion stages every vector of a batch (any space: the column has no dimension) and the
# items it retires, then, in the same transaction, upserts each space's vectors and deletes the
# retired queue rows. A vector is written only while its item is still ours at the claimed
# generation (its text is the one embedded), so a newer edit never receives an older vector.
CREATE_STAGE = """
CREATE TEMP TABLE queue_stage (
    id uuid, generation bigint, space_id integer, embedding vector, content_hash bytea,
    model text
) ON COMMIT DROP
"""

CREATE_DONE = "CREATE TEMP TABLE queue_done (id uuid, generation bigint) ON COMMIT DROP"

NOTIFY = "SELECT pg_notify(%s, '')"

COPY_STAGE = (
    "COPY queue_stage (id, generation, space_id, embedding, content_hash, model) "
    "FROM STDIN WITH (FORMAT BINARY)"
)

COPY_STAGE_TYPES = ["uuid", "int8", "int4", "vector", "bytea", "text"]

COPY_DONE = "COPY queue_done (id, generation) FROM STDIN WITH (FORMAT BINARY)"

COMPLETE = """
DELETE FROM embedding_queue q
USING queue_done d
WHERE q.clip_id = d.id AND q.generation = d.generation AND q.leased_by = %(worker)s
RETURNING q.clip_id
"""

RELEASE_SUPERSEDED = """
UPDATE embedding_queue q SET leased_until = NULL, leased_by = NULL
FROM queue_done d
WHERE q.clip_id = d.id AND q.leased_by = %(worker)s
"""

# Failures are recorded set-based, like completion: one statement for the items that back off,
# one for those that go to the dead letters (the decisions are made in Python by ``decide``).
# Only rows still ours and of the claimed generation are touched.
RETRY_LATER = """
UPDATE embedding_queue q
SET leased_until = NULL, leased_by = NULL, last_error = f.error, claims = 0,
    next_attempt_at = now() + make_interval(secs => f.delay)
FROM unnest(%(ids)s::uuid[], %(generations)s::bigint[], %(errors)s::text[], %(delays)s::float8[])
    AS f (id, generation, error, delay)
WHERE q.clip_id = f.id AND q.generation = f.generation AND q.leased_by = %(worker)s
"""

DEAD_LETTER = """
WITH gone AS (
    DELETE FROM embedding_queue q
    USING unnest(%(ids)s::uuid[], %(generations)s::bigint[], %(errors)s::text[])
        AS f (id, generation, error)
    WHERE q.clip_id = f.id AND q.generation = f.generation AND q.leased_by = %(worker)s
    RETURNING q.clip_id, q.attempts, q.enqueued_at, f.error
)
INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at)
SELECT clip_id, attempts, error, enqueued_at FROM gone
ON CONFLICT (clip_id) DO UPDATE
    SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now()
RETURNING clip_id
"""

ENQUEUE = """
INSERT INTO embedding_queue AS q (clip_id)
SELECT unnest(%s::uuid[])
ON CONFLICT (clip_id) DO NOTHING
"""

#: The bulk import's enqueue (clipembed.bulk.bulk_import), for a whole chunk what the enqueue
#: trigger does for one row (migration 0011): new live clips, and clips whose embedded text or
#: removal changed (read before the upsert into ``clipembed_before``, written rows in
#: ``clipembed_written``), are queued with a new generation; a removed one leaves the queue; a
#: queued clip leaves the dead letters. One notification for the chunk.
ENQUEUE_WRITTEN = """
WITH changed AS (
    SELECT w.id, w.is_removed, w.has_vector FROM clipembed_written w
    LEFT JOIN clipembed_before b ON b.id = w.id
    WHERE (b.id IS NULL AND NOT w.is_removed)
       OR (b.id IS NOT NULL
           AND (b.title, b.broadcaster_name, b.creator_name, b.game_name, b.is_removed)
               IS DISTINCT FROM
               (w.title, w.broadcaster_name, w.creator_name, w.game_name, w.is_removed))
),
gone AS (
    DELETE FROM embedding_queue q USING changed c WHERE q.clip_id = c.id AND c.is_removed
),
queued AS (
    INSERT INTO embedding_queue AS q (clip_id, had_vector)
    SELECT id, has_vector FROM changed WHERE NOT is_removed ORDER BY id
    ON CONFLICT (clip_id) DO UPDATE
        SET generation = q.generation + 1,
            next_attempt_at = now(),
            attempts = 0,
            claims = 0,
            last_error = NULL,
            in_batch = NULL,
            had_vector = q.had_vector OR EXCLUDED.had_vector
    RETURNING q.clip_id
),
cleared AS (
    DELETE FROM embedding_dead_letters d USING queued WHERE d.clip_id = queued.clip_id
)
SELECT count(*) FROM queued
"""

STATS = """
SELECT
    count(*) FILTER (WHERE (leased_until IS NULL OR leased_until < now()) AND in_batch IS NULL)
        AS pending,
    count(*) FILTER (WHERE leased_until >= now()) AS leased,
    count(*) FILTER (WHERE in_batch IS NOT NULL) AS in_batch,
    coalesce(extract(epoch FROM now() - min(enqueued_at)
        FILTER (WHERE (leased_until IS NULL OR leased_until < now()) AND in_batch IS NULL)), 0)::float
        AS oldest_pending_seconds,
    (SELECT count(*) FROM embedding_dead_letters) AS dead_letters
FROM embedding_queue
"""

LIST_DEAD = """
SELECT d.clip_id, d.attempts, d.last_error, d.enqueued_at, d.failed_at, c.title
FROM embedding_dead_letters d JOIN clips c ON c.id = d.clip_id
ORDER BY d.failed_at DESC
LIMIT %s
"""

REPLAY = """
WITH moved AS (
    DELETE FROM embedding_dead_letters
    WHERE %(all)s OR clip_id = ANY(%(ids)s::uuid[])
    RETURNING clip_id
)
INSERT INTO embedding_queue AS q (clip_id)
SELECT clip_id FROM moved
ON CONFLICT (clip_id) DO UPDATE
    SET attempts = 0, claims = 0, next_attempt_at = now(), last_error = NULL
RETURNING q.clip_id
"""


#: A claimed batch's texts, each with its queue row's generation *now*, in one statement (one
#: snapshot): an edit between the claim and this read has bumped the generation and changed the
#: text together, so the text read here is the one of the generation read here. The worker
#: completes under that generation; it used to complete under the claimed one, count the item
#: superseded, and pay for the same new text again.
CLAIMED_TEXTS = f"""
SELECT c.id, {", ".join(f"c.{column}" for column in TEXT_COLUMNS)},
       q.generation AS queue_generation
FROM clips c LEFT JOIN embedding_queue q ON q.clip_id = c.id
WHERE c.id = ANY(%s::uuid[])
"""
