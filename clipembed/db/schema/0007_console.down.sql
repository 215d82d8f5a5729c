-- the enqueue trigger of 0006, without had_vector
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
    PERFORM pg_notify('clipembed_queue', '');
    RETURN NULL;
END
$$;
ALTER TABLE embedding_queue DROP COLUMN IF EXISTS had_vector;
DROP TABLE IF EXISTS clipembed_admin_sessions;
DROP TABLE IF EXISTS clipembed_admin_tokens;
DROP TABLE IF EXISTS clipembed_events;
DROP TABLE IF EXISTS clipembed_workers;
DROP TABLE IF EXISTS clipembed_queue_samples;
DROP TABLE IF EXISTS clipembed_rollups;
DROP TRIGGER IF EXISTS clips_counters_delete ON clips;
DROP TRIGGER IF EXISTS clips_counters_update ON clips;
DROP TRIGGER IF EXISTS clips_counters_insert ON clips;
DROP FUNCTION IF EXISTS clipembed_counters_apply();
DROP TABLE IF EXISTS clipembed_counters;
