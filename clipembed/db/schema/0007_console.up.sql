-- The operations console (issue 9): exact counters, per-minute history, workers, admin access.

-- Exact coverage without counting a million rows: statement-level triggers keep per-model
-- counters of live, removed and embedded clips, spread over 16 slots (by backend pid) so that
-- concurrent writers rarely touch the same row. A reader sums the slots.
CREATE TABLE clipembed_counters (
    slot     smallint NOT NULL,
    model    text NOT NULL,      -- '' for the clip totals, else an embedding_model
    live     bigint NOT NULL DEFAULT 0,
    removed  bigint NOT NULL DEFAULT 0,
    embedded bigint NOT NULL DEFAULT 0,  -- live clips holding a vector of this model
    PRIMARY KEY (slot, model)
);

CREATE OR REPLACE FUNCTION clipembed_counters_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    s smallint := (pg_backend_pid() % 16)::smallint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO clipembed_counters AS c (slot, model, live, removed, embedded)
        SELECT s, d.model, sum(d.live), sum(d.removed), sum(d.embedded)
        FROM (
            SELECT '' AS model, (NOT n.is_removed)::int AS live, n.is_removed::int AS removed,
                   0 AS embedded FROM new_rows n
            UNION ALL
            SELECT n.embedding_model, 0, 0, 1 FROM new_rows n
            WHERE n.embedding IS NOT NULL AND NOT n.is_removed AND n.embedding_model IS NOT NULL
        ) d GROUP BY d.model ORDER BY d.model  -- one lock order: no deadlock between slots' writers
        ON CONFLICT (slot, model) DO UPDATE SET live = c.live + EXCLUDED.live,
            removed = c.removed + EXCLUDED.removed, embedded = c.embedded + EXCLUDED.embedded;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO clipembed_counters AS c (slot, model, live, removed, embedded)
        SELECT s, d.model, -sum(d.live), -sum(d.removed), -sum(d.embedded)
        FROM (
            SELECT '' AS model, (NOT o.is_removed)::int AS live, o.is_removed::int AS removed,
                   0 AS embedded FROM old_rows o
            UNION ALL
            SELECT o.embedding_model, 0, 0, 1 FROM old_rows o
            WHERE o.embedding IS NOT NULL AND NOT o.is_removed AND o.embedding_model IS NOT NULL
        ) d GROUP BY d.model ORDER BY d.model  -- one lock order: no deadlock between slots' writers
        ON CONFLICT (slot, model) DO UPDATE SET live = c.live + EXCLUDED.live,
            removed = c.removed + EXCLUDED.removed, embedded = c.embedded + EXCLUDED.embedded;
    ELSE
        INSERT INTO clipembed_counters AS c (slot, model, live, removed, embedded)
        SELECT s, d.model, sum(d.live), sum(d.removed), sum(d.embedded)
        FROM (
            SELECT '' AS model, (NOT n.is_removed)::int AS live, n.is_removed::int AS removed,
                   0 AS embedded FROM new_rows n
            UNION ALL
            SELECT n.embedding_model, 0, 0, 1 FROM new_rows n
            WHERE n.embedding IS NOT NULL AND NOT n.is_removed AND n.embedding_model IS NOT NULL
            UNION ALL
            SELECT '', -(NOT o.is_removed)::int, -(o.is_removed::int), 0 FROM old_rows o
            UNION ALL
            SELECT o.embedding_model, 0, 0, -1 FROM old_rows o
            WHERE o.embedding IS NOT NULL AND NOT o.is_removed AND o.embedding_model IS NOT NULL
        ) d GROUP BY d.model
        HAVING sum(d.live) <> 0 OR sum(d.removed) <> 0 OR sum(d.embedded) <> 0
        ORDER BY d.model
        ON CONFLICT (slot, model) DO UPDATE SET live = c.live + EXCLUDED.live,
            removed = c.removed + EXCLUDED.removed, embedded = c.embedded + EXCLUDED.embedded;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER clips_counters_insert AFTER INSERT ON clips
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clipembed_counters_apply();
CREATE TRIGGER clips_counters_update AFTER UPDATE ON clips
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clipembed_counters_apply();
CREATE TRIGGER clips_counters_delete AFTER DELETE ON clips
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clipembed_counters_apply();

-- The clips that exist already, counted once.
INSERT INTO clipembed_counters (slot, model, live, removed, embedded)
SELECT 0, '', count(*) FILTER (WHERE NOT is_removed), count(*) FILTER (WHERE is_removed), 0
FROM clips;
INSERT INTO clipembed_counters (slot, model, live, removed, embedded)
SELECT 0, embedding_model, 0, 0, count(*)
FROM clips WHERE embedding IS NOT NULL AND NOT is_removed AND embedding_model IS NOT NULL
GROUP BY embedding_model;

-- Per-minute history written by the jobs (what the charts and rates read), pruned by age.
CREATE TABLE clipembed_rollups (
    minute       timestamptz NOT NULL,
    model        text NOT NULL,
    source       text NOT NULL,          -- backfill, scheduler, worker
    clips        integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    requests     integer NOT NULL DEFAULT 0,
    rate_limited integer NOT NULL DEFAULT 0,
    tokens       bigint NOT NULL DEFAULT 0,
    cache_hits   integer NOT NULL DEFAULT 0,
    cache_misses integer NOT NULL DEFAULT 0,
    cost_usd     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, model, source)
);

-- Queue samples, one per minute, from whichever process reports first.
CREATE TABLE clipembed_queue_samples (
    minute         timestamptz PRIMARY KEY,
    pending        integer NOT NULL,
    oldest_seconds double precision NOT NULL,
    dead_letters   integer NOT NULL
);

-- Workers announce themselves and beat; one whose beat is older than its lease is lost.
CREATE TABLE clipembed_workers (
    name          text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL,
    lease_seconds double precision NOT NULL,
    in_flight     integer NOT NULL DEFAULT 0,
    embedded      bigint NOT NULL DEFAULT 0,
    failed        bigint NOT NULL DEFAULT 0,
    stopped_at    timestamptz
);

-- Things worth showing with a time: index builds.
CREATE TABLE clipembed_events (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    kind    text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX idx_clipembed_events_kind ON clipembed_events (kind, at DESC);

-- Admin access: tokens are stored as SHA-256 digests (a token is 32 random bytes: no salt or
-- slow hash is needed against guessing), sessions likewise.
CREATE TABLE clipembed_admin_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE TABLE clipembed_admin_sessions (
    id_hash    bytea PRIMARY KEY,
    token_id   bigint NOT NULL REFERENCES clipembed_admin_tokens (id) ON DELETE CASCADE,
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- "Stale" (text changed since the vector was made) without joining the queue to the clips: the
-- enqueue trigger records whether the clip held a vector when its text changed.
ALTER TABLE embedding_queue ADD COLUMN had_vector boolean NOT NULL DEFAULT false;
UPDATE embedding_queue q SET had_vector = true
FROM clips c WHERE c.id = q.clip_id AND c.embedding IS NOT NULL;

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
