DROP TABLE IF EXISTS clips;
DROP FUNCTION IF EXISTS clips_search_vector_update();
