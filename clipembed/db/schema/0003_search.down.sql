DROP INDEX IF EXISTS idx_clips_lower_broadcaster;
DROP INDEX IF EXISTS idx_clips_lower_game;
DROP TRIGGER IF EXISTS clips_postings_update ON clips;
DROP TRIGGER IF EXISTS clips_postings_insert ON clips;
DROP TABLE IF EXISTS clip_doclen;
DROP TABLE IF EXISTS clip_postings;
-- CASCADE: the eval harness of clipembed 0.1 kept tables in this schema that used this function
-- (it now has a schema of its own, clipembed_eval, and no trigger).
DROP FUNCTION IF EXISTS clipembed_postings_update() CASCADE;
