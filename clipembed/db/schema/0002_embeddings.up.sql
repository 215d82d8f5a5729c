-- Embeddings (SPEC), plus the content hash that tells a stale embedding from a current one.
-- {dimensions} is substituted with a validated integer by clipembed.db.migrations.
CREATE EXTENSION IF NOT EXISTS vector;

ALTER TABLE clips
    ADD COLUMN embedding vector({dimensions}),
    ADD COLUMN embedding_generated_at timestamptz,
    ADD COLUMN embedding_model varchar(100),
    ADD COLUMN embedding_content_hash bytea;

CREATE INDEX idx_clips_embedding_hnsw ON clips
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- The backfill pages through clips by primary key and picks those without a current embedding.
CREATE INDEX idx_clips_unembedded ON clips (id) WHERE embedding IS NULL AND NOT is_removed;
