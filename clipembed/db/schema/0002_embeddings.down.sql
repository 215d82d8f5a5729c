-- Drops the index and the columns; keeps the extension (as the original does).
DROP INDEX IF EXISTS idx_clips_unembedded;
DROP INDEX IF EXISTS idx_clips_embedding_hnsw;
ALTER TABLE clips
    DROP COLUMN IF EXISTS embedding,
    DROP COLUMN IF EXISTS embedding_generated_at,
    DROP COLUMN IF EXISTS embedding_model,
    DROP COLUMN IF EXISTS embedding_content_hash;
