-- A Batch API batch takes the queued clips no worker holds (issue 19): their queue rows are
-- *parked* for the batch (in_batch = its id), so a worker that starts meanwhile never embeds
-- them too, and given back when the batch is applied (the worker then brings any other space
-- up to date; with one space the apply retires them). An edit of the clip un-parks its row: the
-- new text is the worker's again, and the batch's answer for the old text is superseded.
ALTER TABLE embedding_queue ADD COLUMN in_batch bigint;
CREATE INDEX idx_embedding_queue_in_batch ON embedding_queue (in_batch) WHERE in_batch IS NOT NULL;

CREATE OR REPLACE FUNCTION clipembed_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_removed THEN
        DELETE FROM embedding_queue WHERE clip_id = NEW.id;
        RETURN NULL;
    END IF;
    INSERT INTO embedding_queue AS q (clip_id, had_vector)
    VALUES (NEW.id, NEW.embedding IS NOT NULL)
    ON CONFLICT (clip_id) DO UPDATE
        SET generation = q.generation + 1,
            next_attempt_at = now(),
            attempts = 0,
            claims = 0,
            last_error = NULL,
            in_batch = NULL,
            had_vector = q.had_vector OR EXCLUDED.had_vector;
    DELETE FROM embedding_dead_letters WHERE clip_id = NEW.id;
    -- identical payloads are folded into one notification per transaction
    PERFORM pg_notify('clipembed_queue', '');
    RETURN NULL;
END
$$;
