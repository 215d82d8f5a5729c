"""The Batch API's tables (``embedding_batches``, ``embedding_batch_items``): batches, their
items, and which clips a batch may take."""

from __future__ import annotations

#: Clips of a space waiting in its open Batch API batches (a backfill leaves them to the batch).
WAITING_IN_BATCHES = """
SELECT count(*) FROM embedding_batch_items i JOIN embedding_batches b ON b.id = i.batch_id
WHERE i.state = 'waiting' AND b.state <> 'applied' AND b.space_id = %s
"""

#: Batches still open for a space: it cannot be dropped under them, and ``--via auto``
#: resumes them.
OPEN_FOR_SPACE = "SELECT count(*) FROM embedding_batches WHERE space_id = %s AND state <> 'applied'"

#: Provider states after which nothing more will come; the batch is then applied.
FINISHED = ("completed", "failed", "expired", "cancelled")

#: States whose items are still owned by the batch (not to be planned again).
OPEN = ("planned", "uploaded", "submitted", "validating", "in_progress", "finalizing", "cancelling")

#: States in which the provider holds our tokens (the enqueued-token limit).
ENQUEUED = ("submitted", "validating", "in_progress", "finalizing", "cancelling")

#: Of these clip ids, those not already waiting in an open batch of the space
#: (``%s`` = uuid[], space id).
NOT_IN_A_BATCH = """
SELECT id FROM unnest(%s::uuid[]) AS t(id)
WHERE NOT EXISTS (
    SELECT 1 FROM embedding_batch_items i JOIN embedding_batches b ON b.id = i.batch_id
    WHERE i.clip_id = t.id AND i.state = 'waiting' AND b.state <> 'applied' AND b.space_id = %s
)
"""

#: A batch's id, drawn before its row is written: the queue rows it parks carry it.
NEXT_BATCH_ID = "SELECT nextval(pg_get_serial_sequence('embedding_batches', 'id'))"

CREATE_BATCH = """
INSERT INTO embedding_batches (id, model, dimensions, requests, clips, tokens, cost_usd,
                               sync_cost_usd, space_id)
VALUES (%(id)s, %(model)s, %(dimensions)s, %(requests)s, %(clips)s, %(tokens)s, %(cost)s,
        %(sync_cost)s, %(space)s)
RETURNING id
"""

#: The batch takes the queued clips no worker holds (issue 19): their queue rows are parked for
#: it, in the transaction that records its items. SKIP LOCKED: a row a worker is claiming right
#: now stays the worker's (%(batch)s, %(ids)s).
PARK = """
UPDATE embedding_queue q SET in_batch = %(batch)s
WHERE q.clip_id IN (
    SELECT clip_id FROM embedding_queue
    WHERE clip_id = ANY(%(ids)s::uuid[]) AND in_batch IS NULL
      AND (leased_until IS NULL OR leased_until < now())
    FOR UPDATE SKIP LOCKED
)
RETURNING q.clip_id
"""

#: Of these clips, those on the queue but not parked for this batch: a worker holds them (a
#: lease, or a claim in flight), or another batch parked them (%(batch)s, %(ids)s).
NOT_OURS = """
SELECT clip_id FROM embedding_queue
WHERE clip_id = ANY(%(ids)s::uuid[]) AND in_batch IS DISTINCT FROM %(batch)s
"""

#: Of these clips, those a worker holds (a live lease) or another batch parked (``%s``: ids).
HELD = """
SELECT clip_id FROM embedding_queue
WHERE clip_id = ANY(%s::uuid[]) AND (leased_until >= now() OR in_batch IS NOT NULL)
"""

#: The batch is applied (or given up): its parked rows go back to the workers' queue.
UNPARK = """
UPDATE embedding_queue SET in_batch = NULL, next_attempt_at = now() WHERE in_batch = %s
"""

#: Failed lines wait on the queue with their reason (a later batch, or the worker, takes them).
FAILED_REASONS = """
UPDATE embedding_queue q SET last_error = f.reason
FROM unnest(%s::uuid[], %s::text[]) AS f (id, reason)
WHERE q.clip_id = f.id
"""

#: Of these (clip, content hash) pairs, those whose text already failed in %s batches of the
#: space: a further batch would most likely fail them again.
FAILED_BATCHES = """
SELECT i.clip_id FROM unnest(%s::uuid[], %s::bytea[]) AS t (id, h)
JOIN embedding_batch_items i ON i.clip_id = t.id AND i.content_hash = t.h
JOIN embedding_batches b ON b.id = i.batch_id
WHERE i.state = 'failed' AND b.space_id = %s
GROUP BY i.clip_id HAVING count(*) >= %s
"""

#: Clips that gave up: to the dead letters with their reason (the queue row, if any, goes).
DEAD_LETTER = """
WITH gone AS (
    DELETE FROM embedding_queue q WHERE q.clip_id = ANY(%(ids)s::uuid[])
    RETURNING q.clip_id, q.attempts, q.enqueued_at
)
INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at)
SELECT f.id, coalesce(g.attempts, 0), f.reason, coalesce(g.enqueued_at, now())
FROM unnest(%(ids)s::uuid[], %(reasons)s::text[]) AS f (id, reason)
LEFT JOIN gone g ON g.clip_id = f.id
ON CONFLICT (clip_id) DO UPDATE
    SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now()
"""

#: What each clip's queue row says went wrong (%s: ids).
LAST_ERRORS = "SELECT clip_id, last_error FROM embedding_queue WHERE clip_id = ANY(%s::uuid[])"

ADD_ITEMS = """
INSERT INTO embedding_batch_items (batch_id, clip_id, custom_id, position, content_hash, tokens)
VALUES (%s, %s, %s, %s, %s, %s)
"""

OPEN_BATCHES = """
SELECT id, state, provider_batch_id, input_file_id, output_file_id, error_file_id, model,
       dimensions, tokens
FROM embedding_batches WHERE state <> 'applied' AND space_id = %s ORDER BY id
"""

ENQUEUED_TOKENS = "SELECT coalesce(sum(tokens), 0) FROM embedding_batches WHERE state = ANY(%s)"

#: A batch's waiting items with the clip's current text columns, in line order.
ITEMS = """
SELECT i.clip_id, i.custom_id, i.position, i.content_hash, i.tokens,
       c.title, c.broadcaster_name, c.creator_name, c.game_name, c.is_removed
FROM embedding_batch_items i LEFT JOIN clips c ON c.id = i.clip_id
WHERE i.batch_id = %s AND i.state = 'waiting'
ORDER BY i.custom_id, i.position
"""

SET_UPLOADED = "UPDATE embedding_batches SET state = 'uploaded', input_file_id = %s WHERE id = %s"

SET_SUBMITTED = """
UPDATE embedding_batches SET state = 'submitted', provider_batch_id = %s, submitted_at = now(),
    expires_at = to_timestamp(%s)
WHERE id = %s
"""

SET_PROVIDER_STATE = """
UPDATE embedding_batches SET state = %(state)s, request_counts = %(counts)s,
    output_file_id = %(output)s, error_file_id = %(errors)s, last_error = %(error)s,
    finished_at = CASE WHEN %(finished)s THEN coalesce(finished_at, now()) END
WHERE id = %(id)s AND state <> 'applied'
"""

SET_APPLIED = """
UPDATE embedding_batches b SET state = 'applied', applied_at = now(),
    applied = (SELECT count(*) FROM embedding_batch_items i WHERE i.batch_id = b.id AND i.state = 'applied'),
    failed = (SELECT count(*) FROM embedding_batch_items i WHERE i.batch_id = b.id AND i.state = 'failed'),
    superseded = (SELECT count(*) FROM embedding_batch_items i WHERE i.batch_id = b.id AND i.state = 'superseded'),
    released = (SELECT count(*) FROM embedding_batch_items i WHERE i.batch_id = b.id AND i.state = 'released')
WHERE id = %s
"""

SET_ITEMS = """
UPDATE embedding_batch_items SET state = %s
WHERE batch_id = %s AND clip_id = ANY(%s::uuid[]) AND state = 'waiting'
"""

#: Before upload: items whose clip changed or vanished since planning leave the batch.
DROP_ITEMS = "DELETE FROM embedding_batch_items WHERE batch_id = %s AND clip_id = ANY(%s::uuid[])"

RELEASE_WAITING = """
UPDATE embedding_batch_items SET state = 'released' WHERE batch_id = %s AND state = 'waiting'
"""

LIST = """
SELECT id, state, provider_batch_id, clips, requests, tokens, cost_usd, sync_cost_usd,
       request_counts, applied, failed, superseded, released, created_at, submitted_at, expires_at,
       finished_at, applied_at, last_error
FROM embedding_batches ORDER BY id DESC LIMIT %s
"""

ONE = LIST.replace("ORDER BY id DESC LIMIT %s", "WHERE id = %s")

SUMMARY = """
SELECT state, count(*), coalesce(sum(clips), 0), coalesce(sum(tokens), 0),
       coalesce(sum(cost_usd), 0), coalesce(sum(sync_cost_usd), 0)
FROM embedding_batches GROUP BY state
"""

WAITING_CLIPS = """
SELECT count(*) FROM embedding_batch_items i JOIN embedding_batches b ON b.id = i.batch_id
WHERE i.state = 'waiting' AND b.state <> 'applied'
"""

BATCH_FILE = "SELECT state, input_file_id FROM embedding_batches WHERE id = %s"

PROVIDER_ID = "SELECT provider_batch_id FROM embedding_batches WHERE id = %s"

CLIPS_OF = "SELECT count(*) FROM embedding_batch_items WHERE batch_id = %s"

#: Every item of a batch in line order (the order its inputs were sent in), any state.
ALL_ITEMS = """
SELECT clip_id, custom_id, position, content_hash, tokens, state
FROM embedding_batch_items WHERE batch_id = %s ORDER BY custom_id, position
"""

#: After apply: what the provider billed (its usage), replacing the planned estimate.
SET_BILLED = """
UPDATE embedding_batches SET tokens = %(tokens)s, cost_usd = %(cost)s, sync_cost_usd = %(sync)s
WHERE id = %(id)s
"""
