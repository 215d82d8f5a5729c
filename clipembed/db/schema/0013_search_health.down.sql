DROP TABLE IF EXISTS clipembed_search_health;
