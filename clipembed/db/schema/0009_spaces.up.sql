-- Embedding spaces (issue 10): vectors per (provider, model, dimensions, text template, storage),
-- each space in a table of its own with its own HNSW index; exactly one space is active.
--
-- * ``embedding_spaces`` describes the spaces; ``embedding_space_pointer`` (one row) names the
--   active one and the previous one (rollback). Promote and rollback update that one row: from one
--   statement to the next, every reader sees one space.
-- * The first space, ``default``, is the installation as it was: its provider and model are NULL,
--   meaning "as configured" (EMBEDDING_PROVIDER / EMBEDDING_MODEL), its dimensions those of
--   ``clips.embedding``. Its vectors are copied from ``clips``: nothing is re-embedded.
-- * ``clips.embedding``, ``embedding_model``, ``embedding_generated_at`` (the specification's
--   contract) become a mirror of the active space, kept by a statement trigger on each space
--   table, wherever the active space's dimensions equal the column's (else they are NULL).
-- * ``active_embeddings`` is a view of the active space (a UNION ALL over the spaces whose
--   branches are pruned by the pointer at run time): promote needs no DDL.
CREATE TABLE embedding_spaces (
    id               serial PRIMARY KEY,
    name             text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,39}$'),
    provider         text,   -- NULL: as configured (only the 'default' space)
    model            text,   -- NULL: as configured
    dimensions       integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    storage          text NOT NULL DEFAULT 'vector' CHECK (storage IN ('vector', 'halfvec')),
    template_version integer NOT NULL DEFAULT 1,
    table_name       text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    promoted_at      timestamptz,
    CHECK ((provider IS NULL) = (model IS NULL))
);

CREATE TABLE embedding_space_pointer (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    active_id   integer NOT NULL REFERENCES embedding_spaces (id),   -- the active space cannot be dropped
    previous_id integer REFERENCES embedding_spaces (id) ON DELETE SET NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- The mirror: writes to the active space's table are copied to the clips columns in the same
-- statement (TG_ARGV[0]: the space id, TG_ARGV[1]: whether its dimensions fit clips.embedding).
CREATE OR REPLACE FUNCTION clipembed_space_mirror() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    sid integer := TG_ARGV[0]::integer;
    fits boolean := TG_ARGV[1]::boolean;
BEGIN
    IF NOT fits OR NOT EXISTS (SELECT 1 FROM embedding_space_pointer WHERE active_id = sid) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        UPDATE clips c SET embedding = NULL, embedding_model = NULL,
            embedding_content_hash = NULL, embedding_generated_at = NULL
        FROM old_rows o WHERE c.id = o.clip_id AND c.embedding IS NOT NULL;
    ELSE
        UPDATE clips c SET embedding = n.embedding::vector, embedding_model = n.model,
            embedding_content_hash = n.content_hash, embedding_generated_at = n.generated_at
        FROM new_rows n WHERE c.id = n.clip_id;
    END IF;
    RETURN NULL;
END
$$;

-- A space's table (and, with ``attach``, its mirror triggers). The HNSW index is created by the
-- caller (after a bulk copy it is cheaper to build once).
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

-- active_embeddings over every space, each branch guarded by the pointer (an InitPlan: the
-- branches of inactive spaces are never scanned). Rebuilt when a space is added or dropped.
CREATE OR REPLACE FUNCTION clipembed_active_view_refresh() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    body text;
BEGIN
    SELECT string_agg(format(
        'SELECT e.clip_id, e.embedding::vector AS embedding, e.model, %s::integer AS dimensions,'
        ' e.generated_at, %L::text AS space FROM %I e'
        ' WHERE (SELECT p.active_id FROM embedding_space_pointer p) = %s',
        s.dimensions, s.name, s.table_name, s.id), ' UNION ALL ' ORDER BY s.id)
    INTO body FROM embedding_spaces s;
    IF body IS NULL THEN
        body := 'SELECT NULL::uuid AS clip_id, NULL::vector AS embedding, NULL::text AS model,'
            ' NULL::integer AS dimensions, NULL::timestamptz AS generated_at, NULL::text AS space'
            ' WHERE false';
    END IF;
    EXECUTE 'CREATE OR REPLACE VIEW active_embeddings AS ' || body;
END
$$;

-- The installation as it was becomes the 'default' space, active.
INSERT INTO embedding_spaces (id, name, dimensions, storage, table_name)
VALUES (1, 'default', {dimensions}, 'vector', 'embeddings_space_1');
SELECT setval('embedding_spaces_id_seq', 1);
INSERT INTO embedding_space_pointer (active_id) VALUES (1);
SELECT clipembed_space_create(1, false);
INSERT INTO embeddings_space_1 (clip_id, embedding, model, content_hash, generated_at)
SELECT id, embedding, coalesce(embedding_model, ''), coalesce(embedding_content_hash, ''::bytea),
       coalesce(embedding_generated_at, now())
FROM clips WHERE embedding IS NOT NULL;
CREATE INDEX embeddings_space_1_hnsw ON embeddings_space_1
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
-- the mirror triggers only now: the copy above must not rewrite every clip
SELECT clipembed_space_create(1, true);
SELECT clipembed_active_view_refresh();

-- Search reads the spaces' tables now: the index on the mirror is no longer used.
DROP INDEX IF EXISTS idx_clips_embedding_hnsw;
DROP INDEX IF EXISTS idx_clips_unembedded;

-- A Batch API batch embeds for one space (batches made before spaces: the default space).
ALTER TABLE embedding_batches ADD COLUMN space_id integer NOT NULL DEFAULT 1;
