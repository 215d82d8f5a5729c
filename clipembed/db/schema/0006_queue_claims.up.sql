-- Claims count attempts: an item whose processing kills its worker (crash, OOM, kill -9) is
-- never passed to the failure bookkeeping, so without a counter it would be re-claimed after
-- every lease for ever. `claims` counts the claims of the current text that ended without a
-- recorded outcome; the claim statement dead-letters an item instead of claiming it again once
-- it reaches CLIPEMBED_QUEUE_MAX_ATTEMPTS. A recorded failure (backoff) resets it, and so does an
-- edit (a new text is a new chance) and a replay from the dead letters.
ALTER TABLE embedding_queue ADD COLUMN claims integer NOT NULL DEFAULT 0;

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
            claims = 0,
            last_error = NULL;
    DELETE FROM embedding_dead_letters WHERE clip_id = NEW.id;
    -- identical payloads are folded into one notification per transaction
    PERFORM pg_notify('clipembed_queue', '');
    RETURN NULL;
END
$$;
