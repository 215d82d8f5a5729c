-- Back to 0004's trigger function (no claims column to reset), then drop the column.
CREATE OR REPLACE FUNCTION clipembed_enqueue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_removed THEN
        DELETE FROM embedding_queue WHERE clip_id = NEW.id;
        RETURN NULL;
    END IF;
    INSERT INTO embedding_queue AS q (clip_id) VALUES (NEW.id)
    ON CONFLICT (clip_id) DO UPDATE
        SET generation = q.generation + 1,
            next_attempt_at = now(),
            attempts = 0,
            last_error = NULL;
    DELETE FROM embedding_dead_letters WHERE clip_id = NEW.id;
    -- identical payloads are folded into one notification per transaction
    PERFORM pg_notify('clipembed_queue', '');
    RETURN NULL;
END
$$;

ALTER TABLE embedding_queue DROP COLUMN IF EXISTS claims;
