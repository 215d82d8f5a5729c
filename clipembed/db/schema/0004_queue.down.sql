DROP TRIGGER IF EXISTS clips_enqueue_update ON clips;
DROP TRIGGER IF EXISTS clips_enqueue_insert ON clips;
DROP FUNCTION IF EXISTS clipembed_enqueue();
DROP TABLE IF EXISTS embedding_dead_letters;
DROP TABLE IF EXISTS embedding_queue;
