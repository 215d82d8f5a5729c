-- Back to one embedding per clip in ``clips``. The clips columns already hold the active space's
-- vectors (the mirror) where its dimensions allow; a clip whose vector belongs to another model
-- than the configured one is re-embedded by the next backfill (its content hash differs).
ALTER TABLE embedding_batches DROP COLUMN IF EXISTS space_id;
DROP VIEW IF EXISTS active_embeddings;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT table_name FROM embedding_spaces LOOP
        EXECUTE format('DROP TABLE IF EXISTS %I', r.table_name);
    END LOOP;
END
$$;
DROP TABLE IF EXISTS embedding_space_pointer;
DROP TABLE IF EXISTS embedding_spaces;
DROP FUNCTION IF EXISTS clipembed_active_view_refresh();
DROP FUNCTION IF EXISTS clipembed_space_create(integer, boolean);
DROP FUNCTION IF EXISTS clipembed_space_mirror();
CREATE INDEX IF NOT EXISTS idx_clips_embedding_hnsw ON clips
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX IF NOT EXISTS idx_clips_unembedded ON clips (id) WHERE embedding IS NULL AND NOT is_removed;
