-- The filter columns beside the vectors (issue 20). A search filtered by game or broadcaster
-- used to test each candidate through a join to `clips`: at a million clips an HNSW scan that
-- visits 60,000 index tuples paid 60,000 primary-key lookups (~0.5 s), and the exact ranking of
-- a game's clips paid one per clip. Each space's table now holds `game_key` and
-- `broadcaster_key` (lower(game_name), lower(broadcaster_name) of the text its vector was made
-- from, written by the same upsert as the vector: clipembed.store.space_table) with a B-tree
-- each. Search tests them on the vector's own row and still checks `clips` for the final hits:
-- a key is a prefilter, `clips` stays the truth. Both names are in the embedded text, so a
-- clip whose game or broadcaster changes is re-embedded and its keys rewritten with its vector.

CREATE OR REPLACE FUNCTION clipembed_space_create(p_id integer, attach boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s embedding_spaces;
    fits boolean;
BEGIN
    SELECT * INTO STRICT s FROM embedding_spaces WHERE id = p_id;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I ('
        ' clip_id uuid PRIMARY KEY REFERENCES clips (id) ON DELETE CASCADE,'
        ' embedding %s(%s) NOT NULL,'
        ' model text NOT NULL,'
        ' content_hash bytea NOT NULL,'
        ' generated_at timestamptz NOT NULL DEFAULT now(),'
        ' game_key text,'
        ' broadcaster_key text)',
        s.table_name, s.storage, s.dimensions);
    PERFORM clipembed_space_key_indexes(s.table_name);
    IF attach THEN
        SELECT a.atttypmod = s.dimensions INTO fits FROM pg_attribute a
        WHERE a.attrelid = 'clips'::regclass AND a.attname = 'embedding' AND NOT a.attisdropped;
        fits := coalesce(fits, false);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows'
            ' FOR EACH STATEMENT EXECUTE FUNCTION clipembed_space_mirror(%s, %s)',
            s.table_name || '_mirror_insert', s.table_name, s.id, fits);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING NEW TABLE AS new_rows'
            ' FOR EACH STATEMENT EXECUTE FUNCTION clipembed_space_mirror(%s, %s)',
            s.table_name || '_mirror_update', s.table_name, s.id, fits);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows'
            ' FOR EACH STATEMENT EXECUTE FUNCTION clipembed_space_mirror(%s, %s)',
            s.table_name || '_mirror_delete', s.table_name, s.id, fits);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION clipembed_space_key_indexes(p_table text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (game_key)', p_table || '_game', p_table);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (broadcaster_key)',
        p_table || '_broadcaster', p_table);
END
$$;

-- The spaces that exist: add the columns and fill them from `clips`. An UPDATE of every row
-- would insert each vector into the HNSW graph again (a few ms each); the index is dropped,
-- the keys written, and the same index built again from its own definition, in this
-- transaction (searches wait for it). The mirror triggers stay quiet: the vectors do not change.
DO $$
DECLARE
    s record;
    hnsw text;
BEGIN
    FOR s IN SELECT table_name FROM embedding_spaces ORDER BY id LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS game_key text,'
            ' ADD COLUMN IF NOT EXISTS broadcaster_key text', s.table_name);
        SELECT pg_get_indexdef(i.indexrelid) INTO hnsw
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = to_regclass(s.table_name) AND c.relname = s.table_name || '_hnsw';
        IF hnsw IS NOT NULL THEN
            EXECUTE format('DROP INDEX %I', s.table_name || '_hnsw');
        END IF;
        EXECUTE format('ALTER TABLE %I DISABLE TRIGGER USER', s.table_name);
        EXECUTE format('UPDATE %I e SET game_key = lower(c.game_name),'
            ' broadcaster_key = lower(c.broadcaster_name) FROM clips c WHERE c.id = e.clip_id',
            s.table_name);
        EXECUTE format('ALTER TABLE %I ENABLE TRIGGER USER', s.table_name);
        PERFORM clipembed_space_key_indexes(s.table_name);
        IF hnsw IS NOT NULL THEN
            EXECUTE hnsw;
        END IF;
    END LOOP;
END
$$;
