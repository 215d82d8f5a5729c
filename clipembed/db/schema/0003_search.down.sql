DROP INDEX IF EXISTS idx_clips_lower_broadcaster;
DROP INDEX IF EXISTS idx_clips_lower_game;
DROP TRIGGER IF EXISTS clips_postings_update ON clips;
DROP TRIGGER IF EXISTS clips_postings_insert ON clips;
DROP TABLE IF EXISTS clip_doclen;
DROP TABLE IF EXISTS clip_postings;
-- CASCADE: the BEIR harness's tables (clipembed eval beir) use the same trigger function.
DROP FUNCTION IF EXISTS clipembed_postings_update() CASCADE;
