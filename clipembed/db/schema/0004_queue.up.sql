-- Real-time embedding: triggers record the work durably and NOTIFY; workers claim it with
-- FOR UPDATE SKIP LOCKED and a lease. One row per clip, so repeated edits coalesce; the
-- generation counter tells a worker whose result belongs to an older text that it is stale.
CREATE TABLE embedding_queue (
    clip_id         uuid PRIMARY KEY REFERENCES clips (id) ON DELETE CASCADE,
    generation      bigint NOT NULL DEFAULT 1,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    leased_until    timestamptz,
    leased_by       text,
    last_error      text
);
CREATE INDEX idx_embedding_queue_ready ON embedding_queue (next_attempt_at, enqueued_at);

CREATE TABLE embedding_dead_letters (
    clip_id     uuid PRIMARY KEY REFERENCES clips (id) ON DELETE CASCADE,
    attempts    integer NOT NULL,
    last_error  text,
    enqueued_at timestamptz NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);

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

CREATE TRIGGER clips_enqueue_insert
    AFTER INSERT ON clips
    FOR EACH ROW WHEN (NOT NEW.is_removed)
    EXECUTE FUNCTION clipembed_enqueue();

-- Only a change of the embedded text (or un-removing a clip) costs an embedding:
-- view counts and votes never enqueue anything.
CREATE TRIGGER clips_enqueue_update
    AFTER UPDATE OF title, broadcaster_name, creator_name, game_name, is_removed ON clips
    FOR EACH ROW WHEN (
        OLD.title IS DISTINCT FROM NEW.title
        OR OLD.broadcaster_name IS DISTINCT FROM NEW.broadcaster_name
        OR OLD.creator_name IS DISTINCT FROM NEW.creator_name
        OR OLD.game_name IS DISTINCT FROM NEW.game_name
        OR OLD.is_removed IS DISTINCT FROM NEW.is_removed
    )
    EXECUTE FUNCTION clipembed_enqueue();
