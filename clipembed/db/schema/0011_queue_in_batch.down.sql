-- the enqueue trigger of 0007, then the column (parked rows become ordinary queued rows)
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
            had_vector = q.had_vector OR EXCLUDED.had_vector;
    DELETE FROM embedding_dead_letters WHERE clip_id = NEW.id;
    -- identical payloads are folded into one notification per transaction
    PERFORM pg_notify('clipembed_queue', '');
    RETURN NULL;
END
$$;
DROP INDEX IF EXISTS idx_embedding_queue_in_batch;
ALTER TABLE embedding_queue DROP COLUMN IF EXISTS in_batch;
