"""The SQL of embedding spaces: the registry, the pointer, a space's table, the clips mirror.

A space's table and index names come from ``embedding_spaces.table_name`` (written by us,
``embeddings_space_<id>``) and are composed with :mod:`psycopg.sql` identifiers only.
"""

from __future__ import annotations

from psycopg import sql

SPACE_COLUMNS = (
    "s.id, s.name, s.provider, s.model, s.dimensions, s.storage, s.template_version,"
    " s.table_name, s.created_at, s.promoted_at"
)

#: Every space with the pointer's view of it.
ALL = f"""
SELECT {SPACE_COLUMNS}, s.id = p.active_id AS active, s.id = p.previous_id AS previous
FROM embedding_spaces s CROSS JOIN embedding_space_pointer p
ORDER BY s.id
"""

#: The active space (one row).
ACTIVE = f"""
SELECT {SPACE_COLUMNS}, true AS active, false AS previous
FROM embedding_space_pointer p JOIN embedding_spaces s ON s.id = p.active_id
"""

POINTER = "SELECT active_id, previous_id, changed_at FROM embedding_space_pointer"
#: Lock the pointer for a promote/rollback/drop: they are serialised.
LOCK_POINTER = (
    "SELECT active_id, previous_id FROM embedding_space_pointer WHERE only_row FOR UPDATE"
)
SET_POINTER = """
UPDATE embedding_space_pointer SET active_id = %(active)s, previous_id = %(previous)s,
    changed_at = clock_timestamp()
WHERE only_row
"""
MARK_PROMOTED = "UPDATE embedding_spaces SET promoted_at = clock_timestamp() WHERE id = %s"
NOTIFY = "SELECT pg_notify('clipembed_spaces', %s)"
EVENT = "INSERT INTO clipembed_events (kind, detail) VALUES (%s, %s)"

INSERT = """
INSERT INTO embedding_spaces (name, provider, model, dimensions, storage, table_name)
VALUES (%(name)s, %(provider)s, %(model)s, %(dimensions)s, %(storage)s, '')
RETURNING id
"""
SET_TABLE_NAME = "UPDATE embedding_spaces SET table_name = %s WHERE id = %s"
CREATE_TABLE = "SELECT clipembed_space_create(%s, true)"
REFRESH_VIEW = "SELECT clipembed_active_view_refresh()"
DELETE = "DELETE FROM embedding_spaces WHERE id = %s"
#: Batches still open for a space: it cannot be dropped under them.
OPEN_BATCHES = "SELECT count(*) FROM embedding_batches WHERE space_id = %s AND state <> 'applied'"

INDEX_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"


def create_index(table: str, index: str, storage: str) -> sql.Composed:
    """The space's HNSW index: cosine distance, m = 16, ef_construction = 64 (as before)."""
    ops = "halfvec_cosine_ops" if storage == "halfvec" else "vector_cosine_ops"
    return sql.SQL(
        "CREATE INDEX IF NOT EXISTS {index} ON {table} "
        "USING hnsw (embedding {ops}) WITH (m = 16, ef_construction = 64)"
    ).format(index=sql.Identifier(index), table=sql.Identifier(table), ops=sql.SQL(ops))


def count_rows(table: str) -> sql.Composed:
    """The rows of a space's table (an index build sizes its memory by them)."""
    return sql.SQL("SELECT count(*) FROM {table}").format(table=sql.Identifier(table))


def drop_index(index: str) -> sql.Composed:
    return sql.SQL("DROP INDEX IF EXISTS {index}").format(index=sql.Identifier(index))


def drop_table(table: str) -> sql.Composed:
    return sql.SQL("DROP TABLE IF EXISTS {table}").format(table=sql.Identifier(table))


def coverage(table: str) -> sql.Composed:
    """Live clips, those with a vector in the space, and when the newest vector was made."""
    return sql.SQL(
        "SELECT count(*) AS live, count(e.clip_id) AS embedded,"
        " max(e.generated_at) AS last_generated"
        " FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id WHERE NOT c.is_removed"
    ).format(table=sql.Identifier(table))


def behind(candidate: str, active: str) -> sql.Composed:
    """Live clips the active space has a vector for and the candidate has not, with nothing on
    the queue to bring it (a clip inserted a moment ago is on the queue: the worker writes it
    into both spaces). Promote refuses while this is not 0."""
    return sql.SQL(
        "SELECT count(*) FROM clips c JOIN {active} a ON a.clip_id = c.id"
        " WHERE NOT c.is_removed"
        " AND NOT EXISTS (SELECT 1 FROM {candidate} e WHERE e.clip_id = c.id)"
        " AND NOT EXISTS (SELECT 1 FROM embedding_queue q WHERE q.clip_id = c.id)"
    ).format(candidate=sql.Identifier(candidate), active=sql.Identifier(active))


#: Table and index sizes in bytes (``%s`` = table name, index name).
SIZES = """
SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)
         - coalesce(pg_indexes_size(to_regclass(%s)), 0) AS table_bytes,
       coalesce(pg_relation_size(to_regclass(%s)), 0) AS index_bytes
"""


def hashes(table: str) -> sql.Composed:
    """The stored content hash of each of these clips in a space (``%s`` = uuid[])."""
    return sql.SQL("SELECT clip_id, content_hash FROM {table} WHERE clip_id = ANY(%s)").format(
        table=sql.Identifier(table)
    )


def vector_of(table: str) -> sql.Composed:
    """A live clip's vector in a space, as ``vector`` (similar clips)."""
    return sql.SQL(
        "SELECT e.embedding::vector FROM {table} e JOIN clips c ON c.id = e.clip_id"
        " WHERE e.clip_id = %s AND NOT c.is_removed"
    ).format(table=sql.Identifier(table))


# ---------------------------------------------------------------- the clips mirror


def mirror_page(table: str) -> sql.Composed:
    """Copy one keyset page of the active space into the clips columns (``%s``: after, limit).

    Rows already equal are skipped; a clip without a vector in the space is cleared. Returns the
    last id of the page (NULL when the page was empty) and the number of rows changed.
    """
    return sql.SQL(
        """
WITH page AS (
    SELECT c.id FROM clips c WHERE c.id > %s ORDER BY c.id LIMIT %s
), changed AS (
    UPDATE clips c
    SET embedding = e.embedding::vector, embedding_model = e.model,
        embedding_content_hash = e.content_hash, embedding_generated_at = e.generated_at
    FROM page p LEFT JOIN {table} e ON e.clip_id = p.id
    WHERE c.id = p.id
      AND (c.embedding_content_hash IS DISTINCT FROM e.content_hash
           OR c.embedding_model IS DISTINCT FROM e.model
           OR (c.embedding IS NULL) <> (e.clip_id IS NULL))
    RETURNING 1
)
SELECT (SELECT max(id::text)::uuid FROM page), (SELECT count(*) FROM changed)
"""
    ).format(table=sql.Identifier(table))


#: The active space does not fit the clips column: the mirror is empty.
MIRROR_CLEAR_PAGE = """
WITH page AS (
    SELECT id FROM clips WHERE id > %s ORDER BY id LIMIT %s
), changed AS (
    UPDATE clips c SET embedding = NULL, embedding_model = NULL, embedding_content_hash = NULL,
        embedding_generated_at = NULL
    FROM page p WHERE c.id = p.id AND c.embedding IS NOT NULL
    RETURNING 1
)
SELECT (SELECT max(id::text)::uuid FROM page), (SELECT count(*) FROM changed)
"""

#: The clips column's dimensions (the mirror fits a space of exactly these).
CLIP_COLUMN_DIMENSIONS = """
SELECT a.atttypmod FROM pg_attribute a
WHERE a.attrelid = 'clips'::regclass AND a.attname = 'embedding' AND NOT a.attisdropped
"""
