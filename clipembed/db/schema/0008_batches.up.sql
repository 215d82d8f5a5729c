-- Half-price backfills through the OpenAI Batch API (issue 11): durable state, so a process
-- killed at any point resumes without submitting a clip twice or losing a finished result.
CREATE TABLE embedding_batches (
    id                bigserial PRIMARY KEY,
    -- planned -> uploaded -> submitted -> (the provider's: validating, in_progress, finalizing,
    -- completed, failed, expired, cancelling, cancelled) -> applied
    state             text NOT NULL DEFAULT 'planned',
    provider_batch_id text UNIQUE,
    input_file_id     text,
    output_file_id    text,
    error_file_id     text,
    model             text NOT NULL,
    dimensions        integer NOT NULL,
    requests          integer NOT NULL,
    clips             integer NOT NULL,
    tokens            bigint NOT NULL,
    cost_usd          double precision NOT NULL,   -- at the batch price
    sync_cost_usd     double precision NOT NULL,   -- what the same tokens cost synchronously
    request_counts    jsonb NOT NULL DEFAULT '{}',
    applied           integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    superseded        integer NOT NULL DEFAULT 0,
    released          integer NOT NULL DEFAULT 0,  -- never answered: planned into a later batch
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    expires_at        timestamptz,
    finished_at       timestamptz,
    applied_at        timestamptz
);
CREATE INDEX idx_embedding_batches_open ON embedding_batches (state) WHERE state <> 'applied';

-- One row per clip in a batch: which request line (custom_id) and input position carry it, and
-- the content hash its text had when it was planned (a clip edited since gets no stale vector).
CREATE TABLE embedding_batch_items (
    batch_id     bigint NOT NULL REFERENCES embedding_batches (id) ON DELETE CASCADE,
    clip_id      uuid NOT NULL REFERENCES clips (id) ON DELETE CASCADE,
    custom_id    text NOT NULL,
    position     integer NOT NULL,
    content_hash bytea NOT NULL,
    tokens       integer NOT NULL,
    -- waiting | applied | superseded (edited meanwhile) | failed (a failed line: the worker
    -- queue retries it) | released (never answered: expired/cancelled/failed batch, re-planned)
    state        text NOT NULL DEFAULT 'waiting',
    PRIMARY KEY (batch_id, clip_id)
);
CREATE INDEX idx_embedding_batch_items_waiting ON embedding_batch_items (clip_id)
    WHERE state = 'waiting';
CREATE INDEX idx_embedding_batch_items_line ON embedding_batch_items (batch_id, custom_id);
