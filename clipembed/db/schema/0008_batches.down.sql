DROP TABLE IF EXISTS embedding_batch_items;
DROP TABLE IF EXISTS embedding_batches;
