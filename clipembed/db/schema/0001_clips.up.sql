-- The clips table of Clipper (SPEC), with the full-text search vector kept by a trigger.
-- Timestamps are timestamptz (the original used timestamp without zone; Twitch times are UTC).
CREATE TABLE IF NOT EXISTS clips (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    twitch_clip_id   varchar(100) NOT NULL UNIQUE,
    twitch_clip_url  text NOT NULL,
    embed_url        text NOT NULL,
    title            varchar(255) NOT NULL,
    creator_name     varchar(100) NOT NULL,
    creator_id       varchar(100),
    broadcaster_name varchar(100) NOT NULL,
    broadcaster_id   varchar(100),
    game_id          varchar(50),
    game_name        varchar(100),
    language         varchar(10),
    thumbnail_url    text,
    duration         double precision,
    view_count       integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    imported_at      timestamptz NOT NULL DEFAULT now(),
    vote_score       integer NOT NULL DEFAULT 0,
    is_removed       boolean NOT NULL DEFAULT false,
    is_nsfw          boolean NOT NULL DEFAULT false,
    search_vector    tsvector
);

CREATE INDEX IF NOT EXISTS idx_clips_created_at ON clips (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_clips_game_name ON clips (game_name);
CREATE INDEX IF NOT EXISTS idx_clips_broadcaster_name ON clips (broadcaster_name);
CREATE INDEX IF NOT EXISTS idx_clips_search_vector ON clips USING gin (search_vector);

-- Weights as in the original: title A, creator and broadcaster B, game C.
CREATE OR REPLACE FUNCTION clips_search_vector_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_vector :=
        setweight(to_tsvector('english', coalesce(NEW.title, '')), 'A') ||
        setweight(to_tsvector('english', coalesce(NEW.creator_name, '')), 'B') ||
        setweight(to_tsvector('english', coalesce(NEW.broadcaster_name, '')), 'B') ||
        setweight(to_tsvector('english', coalesce(NEW.game_name, '')), 'C');
    RETURN NEW;
END
$$;

CREATE TRIGGER clips_search_vector_trigger
    BEFORE INSERT OR UPDATE OF title, creator_name, broadcaster_name, game_name ON clips
    FOR EACH ROW EXECUTE FUNCTION clips_search_vector_update();
