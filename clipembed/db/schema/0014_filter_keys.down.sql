-- The spaces' filter columns go (their indexes with them); the table function as 0009 made it.
DO $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT table_name FROM embedding_spaces ORDER BY id LOOP
        EXECUTE format('ALTER TABLE %I DROP COLUMN IF EXISTS game_key,'
            ' DROP COLUMN IF EXISTS broadcaster_key', s.table_name);
    END LOOP;
END
$$;
DROP FUNCTION IF EXISTS clipembed_space_key_indexes(text);

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
        ' generated_at timestamptz NOT NULL DEFAULT now())',
        s.table_name, s.storage, s.dimensions);
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
