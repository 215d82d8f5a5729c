"""The clips table: its row upsert, the bulk import's set-based statements, the mirror columns.

``clips`` is clipembed's own table, or a view of an adopted one (:mod:`clipembed.source`), whose
DDL is :mod:`clipembed.source.queries`. The bulk statements do for a whole chunk what the row
triggers of migrations 0003 (postings) and 0011 (queue) do for one row; the chunk's transaction
sets ``clipembed.bulk`` so those triggers return at once (migration 0012). The queue's statement
is :data:`clipembed.store.queue_table.ENQUEUE_WRITTEN`. Temporary tables are per session and
emptied at every commit: nothing is left behind by a killed import.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

#: The first key of a keyset scan over ``clips.id`` (uuid): every id sorts after it.
FIRST_ID = "00000000-0000-0000-0000-000000000000"


def upsert_clips(columns: Sequence[str], *, table: sql.Composable | None = None) -> sql.Composed:
    """INSERT ... ON CONFLICT (twitch_clip_id) DO UPDATE for the given columns, one row per call.

    psycopg's ``executemany`` pipelines it: one round trip per batch, not per row. A row equal
    to the stored one is left alone, so re-importing a file writes (and triggers) nothing.
    ``table``: where (default ``clips``; an adopted table, whose triggers bring the rows to
    clipembed), with ``columns`` named as that table names them.
    """
    target = table if table is not None else sql.Identifier("clips")
    updated = [c for c in columns if c != "twitch_clip_id"]
    return sql.SQL(
        "INSERT INTO {table} AS t ({cols}) VALUES ({params}) "
        "ON CONFLICT (twitch_clip_id) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        table=target,
        old=sql.SQL(", ").join(sql.Identifier("t", c) for c in updated),
        new=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in updated),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        params=sql.SQL(", ").join(sql.Placeholder() for _ in columns),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated
        ),
    )


COUNT_CLIPS = "SELECT count(*) FROM clips"


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

#: The columns a clip's embedded text is made from (``clipembed.clips.ClipText.from_row``), and
#: whether it is removed: every read of texts to embed takes these (here and ``queue_table.CLAIMED_TEXTS``).
TEXT_COLUMNS = ("title", "broadcaster_name", "creator_name", "game_name", "is_removed")

CLIP_TEXTS = f"""
SELECT id, {", ".join(TEXT_COLUMNS)}
FROM clips WHERE id = ANY(%s::uuid[])
"""

#: The staging table's type per column of the import file (clipembed.bulk.importer.ClipRecord);
#: the upsert's assignment casts bring them to the target table's own types.
STAGE_TYPES = {
    "duration": "double precision",
    "view_count": "integer",
    "vote_score": "integer",
    "created_at": "timestamptz",
    "is_removed": "boolean",
    "is_nsfw": "boolean",
}

#: What a chunk's upsert returns of each written row, and what is read before it of each row
#: it is about to change: the columns the embedded text, the analysis and the queue depend on.
WATCHED = ("title", "broadcaster_name", "creator_name", "game_name", "is_removed")

BULK_ON = "SELECT set_config('clipembed.bulk', 'on', true)"

#: The chunk's sorts (dedup, postings in key order) in memory rather than in temporary files.
WORK_MEM = "SET LOCAL work_mem = '64MB'"


def create_stage(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS clipembed_stage (line bigint NOT NULL, {cols}) "
        "ON COMMIT DELETE ROWS"
    ).format(
        cols=sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(STAGE_TYPES.get(c, "text")))
            for c in columns
        )
    )


def stage_types(columns: Sequence[str]) -> list[str]:
    """The binary COPY's types, ``line`` first."""
    return ["int8"] + [STAGE_TYPES.get(c, "text") for c in columns]


def copy_stage(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY clipembed_stage (line, {cols}) FROM STDIN WITH (FORMAT BINARY)").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


ANALYZE_STAGE = "ANALYZE clipembed_stage"

_TRACKED = "id uuid PRIMARY KEY, search_vector tsvector, " + ", ".join(
    f"{c} {'boolean' if c == 'is_removed' else 'text'}" for c in WATCHED
)

CREATE_BEFORE = (
    f"CREATE TEMP TABLE IF NOT EXISTS clipembed_before ({_TRACKED}) ON COMMIT DELETE ROWS"
)

CREATE_WRITTEN = (
    f"CREATE TEMP TABLE IF NOT EXISTS clipembed_written ({_TRACKED}, has_vector boolean) "
    "ON COMMIT DELETE ROWS"
)

#: The stored state of the clips the chunk is about to change, row-locked (in id order: two
#: imports never deadlock) so that no other writer changes them between this read and the
#: upsert: the comparison below is then exact.
READ_BEFORE = f"""
INSERT INTO clipembed_before (id, search_vector, {", ".join(WATCHED)})
SELECT c.id, c.search_vector, {", ".join("c." + w for w in WATCHED)}
FROM clips c
WHERE c.twitch_clip_id IN (SELECT twitch_clip_id FROM clipembed_stage)
ORDER BY c.id
FOR UPDATE OF c
"""


def upsert_from_stage(
    columns: Sequence[str], *, table: sql.Composable | None = None, returning: bool = True
) -> sql.Composed:
    """The chunk's upsert: a file naming a clip twice keeps its last line (as the row path,
    where the later row overwrites); a row equal to the stored one is left alone.
    ``returning``: record what was written in ``clipembed_written`` (the owned table)."""
    target = table if table is not None else sql.Identifier("clips")
    updated = [c for c in columns if c != "twitch_clip_id"]
    upsert = sql.SQL(
        "INSERT INTO {table} AS t ({cols}) "
        "SELECT DISTINCT ON (s.twitch_clip_id) {scols} FROM clipembed_stage s "
        "ORDER BY s.twitch_clip_id, s.line DESC "
        "ON CONFLICT (twitch_clip_id) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        table=target,
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        scols=sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updated
        ),
        old=sql.SQL(", ").join(sql.Identifier("t", c) for c in updated),
        new=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in updated),
    )
    if not returning:
        return upsert
    watched = sql.SQL(", ").join(sql.Identifier("t", c) for c in WATCHED)
    return sql.SQL(
        "WITH up AS ({upsert} RETURNING t.id, t.search_vector, {watched}, "
        "t.embedding IS NOT NULL) INSERT INTO clipembed_written SELECT * FROM up"
    ).format(upsert=upsert, watched=watched)


#: Written clips whose analysis changed (new ones, and those whose search_vector differs: the
#: WHEN of the postings trigger), as ``reindex``.
_REINDEX = """
WITH reindex AS (
    SELECT w.id, w.search_vector FROM clipembed_written w
    LEFT JOIN clipembed_before b ON b.id = w.id
    WHERE b.id IS NULL OR b.search_vector IS DISTINCT FROM w.search_vector
)"""

DELETE_POSTINGS = _REINDEX + " DELETE FROM clip_postings p USING reindex r WHERE p.doc_id = r.id"

#: As the postings trigger: per document its lengths per weight class (0 for no lexeme) ...
UPSERT_DOCLEN = (
    _REINDEX
    + """
INSERT INTO clip_doclen (doc_id, len_a, len_b, len_c, len_d)
SELECT r.id,
       count(u.lexeme) FILTER (WHERE w = 'A'), count(u.lexeme) FILTER (WHERE w = 'B'),
       count(u.lexeme) FILTER (WHERE w = 'C'), count(u.lexeme) FILTER (WHERE w = 'D')
FROM reindex r
LEFT JOIN LATERAL unnest(r.search_vector) AS u ON true
LEFT JOIN LATERAL unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w ON true
GROUP BY r.id
ORDER BY r.id
ON CONFLICT (doc_id) DO UPDATE SET len_a = EXCLUDED.len_a, len_b = EXCLUDED.len_b,
    len_c = EXCLUDED.len_c, len_d = EXCLUDED.len_d
"""
)

#: ... and per (lexeme, document) its term frequencies with the document's lengths (the sums
#: over its lexemes: no join with clip_doclen, whose scan would grow with the table), inserted
#: in key order.
INSERT_POSTINGS = (
    _REINDEX
    + """
INSERT INTO clip_postings (lexeme, doc_id, tf_a, tf_b, tf_c, tf_d, len_a, len_b, len_c, len_d)
SELECT t.lexeme, t.id, least(t.a, 32767), least(t.b, 32767), least(t.c, 32767),
       least(t.d, 32767),
       sum(t.a) OVER w, sum(t.b) OVER w, sum(t.c) OVER w, sum(t.d) OVER w
FROM (
    SELECT r.id, u.lexeme,
           count(*) FILTER (WHERE w = 'A') AS a, count(*) FILTER (WHERE w = 'B') AS b,
           count(*) FILTER (WHERE w = 'C') AS c, count(*) FILTER (WHERE w = 'D') AS d
    FROM reindex r, unnest(r.search_vector) AS u,
         unnest(coalesce(u.weights, ARRAY['D']::text[])) AS w
    GROUP BY r.id, u.lexeme
) t
WINDOW w AS (PARTITION BY t.id)
ORDER BY t.lexeme, t.id
"""
)
