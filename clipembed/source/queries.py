"""Every statement over an adopted clips table, composed with ``psycopg.sql`` from its mapping
(the functions and triggers clipembed installs on it: :mod:`clipembed.source.triggers`).

The adopted table belongs to the platform: clipembed reads it, writes only the specification's
vector columns (the mirror) and the rows ``clipembed import`` brings, and puts nothing on it but
the triggers named here (``clipembed_*``). Those triggers have no column list and no WHEN
clause, so the catalog records no dependency of clipembed on any of its columns: the platform's
own migrations may change or drop them (Clipper's 000019 down drops the vector columns).
"""

from __future__ import annotations

from psycopg import sql

from clipembed.source import FIELDS, SCHEMA, Source

#: the columns (name -> type) of a table, by schema and name
TABLE_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

TABLE_EXISTS = """
SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

CREATE_CONFIG = sql.SQL(
    """
CREATE TABLE IF NOT EXISTS {schema}.source_config (
    only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    source            jsonb NOT NULL,          -- clipembed.source.Source, as resolved
    added_columns     text[] NOT NULL DEFAULT '{{}}',  -- vector columns clipembed added
    created_extension boolean NOT NULL DEFAULT false,  -- pgvector installed by clipembed
    adopted_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
)
"""
).format(schema=sql.Identifier(SCHEMA))

READ_CONFIG = sql.SQL(
    "SELECT source, added_columns, created_extension FROM {schema}.source_config"
).format(schema=sql.Identifier(SCHEMA))

WRITE_CONFIG = sql.SQL(
    """
INSERT INTO {schema}.source_config (source, added_columns, created_extension)
VALUES (%s, %s, %s)
ON CONFLICT (only_row) DO UPDATE SET source = EXCLUDED.source,
    added_columns = EXCLUDED.added_columns, created_extension = EXCLUDED.created_extension,
    updated_at = now()
"""
).format(schema=sql.Identifier(SCHEMA))


def table(src: Source) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(src.mapping.schema), sql.Identifier(src.mapping.table)
    )


def column(src: Source, field: str, row: str | None = None) -> sql.Composable:
    ident = sql.Identifier(src.mapping.column(field))
    return ident if row is None else sql.SQL("{}.{}").format(sql.SQL(row), ident)


def hidden(src: Source, row: str) -> sql.Composable:
    """Whether a row is hidden: any flag true, NULL counting as false."""
    if not src.hidden:
        return sql.SQL("false")
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("coalesce({}.{}, false)").format(sql.SQL(row), sql.Identifier(c))
            for c in src.hidden
        )
    )


def twitch_id(src: Source, row: str) -> sql.Composable:
    if src.twitch_clip_id is None:
        return sql.SQL("{}::text").format(column(src, "id", row))
    return sql.SQL("coalesce({}.{}::text, {}::text)").format(
        sql.SQL(row), sql.Identifier(src.twitch_clip_id), column(src, "id", row)
    )


def values(src: Source, row: str) -> list[sql.Composable]:
    """The shadow row of a source row: id, twitch_clip_id, title, creator, broadcaster, game,
    language, created_at, is_removed (text columns NOT NULL in the shadow get '')."""
    return [
        column(src, "id", row),
        twitch_id(src, row),
        sql.SQL("coalesce({}::text, '')").format(column(src, "title", row)),
        sql.SQL("coalesce({}::text, '')").format(column(src, "creator", row)),
        sql.SQL("coalesce({}::text, '')").format(column(src, "broadcaster", row)),
        sql.SQL("{}::text").format(column(src, "game", row)),
        sql.SQL("{}::text").format(column(src, "language", row)),
        sql.SQL("coalesce({}::timestamptz, now())").format(column(src, "created_at", row)),
        hidden(src, row),
    ]


SHADOW_COLUMNS = sql.SQL(
    "id, twitch_clip_id, title, creator_name, broadcaster_name, game_name, language,"
    " created_at, is_removed"
)

#: The shadow's text columns become text (the adopted table's may be longer than the
#: specification's varchar sizes; a copy must never fail a platform's write).
#: (0001's keyword trigger names those columns: it is set aside while they change.)
WIDEN_SHADOW = sql.SQL(
    """
DROP TRIGGER clips_search_vector_trigger ON {schema}.clips;
ALTER TABLE {schema}.clips ALTER COLUMN twitch_clip_id TYPE text,
    ALTER COLUMN title TYPE text, ALTER COLUMN creator_name TYPE text,
    ALTER COLUMN broadcaster_name TYPE text, ALTER COLUMN game_name TYPE text,
    ALTER COLUMN language TYPE text, ALTER COLUMN twitch_clip_url SET DEFAULT '',
    ALTER COLUMN embed_url SET DEFAULT '';
CREATE TRIGGER clips_search_vector_trigger
    BEFORE INSERT OR UPDATE OF title, creator_name, broadcaster_name, game_name ON {schema}.clips
    FOR EACH ROW EXECUTE FUNCTION {schema}.clips_search_vector_update()
"""
).format(schema=sql.Identifier(SCHEMA))


def copy_into_shadow(src: Source) -> sql.Composed:
    """Every row of the adopted table into the shadow (set-based; existing rows refreshed)."""
    return sql.SQL(
        """
INSERT INTO {schema}.clips AS c ({cols})
SELECT {values} FROM {table} s
ON CONFLICT (id) DO UPDATE SET twitch_clip_id = EXCLUDED.twitch_clip_id,
    title = EXCLUDED.title, creator_name = EXCLUDED.creator_name,
    broadcaster_name = EXCLUDED.broadcaster_name, game_name = EXCLUDED.game_name,
    language = EXCLUDED.language, created_at = EXCLUDED.created_at,
    is_removed = EXCLUDED.is_removed
WHERE (c.twitch_clip_id, c.title, c.creator_name, c.broadcaster_name, c.game_name, c.language,
       c.created_at, c.is_removed)
   IS DISTINCT FROM (EXCLUDED.twitch_clip_id, EXCLUDED.title, EXCLUDED.creator_name,
       EXCLUDED.broadcaster_name, EXCLUDED.game_name, EXCLUDED.language, EXCLUDED.created_at,
       EXCLUDED.is_removed)
"""
    ).format(
        schema=sql.Identifier(SCHEMA),
        cols=SHADOW_COLUMNS,
        values=sql.SQL(", ").join(values(src, "s")),
        table=table(src),
    )


def forget_vanished(src: Source) -> sql.Composed:
    """Shadow rows whose clip is no longer in the adopted table (deleted while not watched)."""
    return sql.SQL(
        "DELETE FROM {schema}.clips c WHERE NOT EXISTS"
        " (SELECT 1 FROM {table} s WHERE s.{id} = c.id)"
    ).format(schema=sql.Identifier(SCHEMA), table=table(src), id=column(src, "id"))


def add_vector_column(src_schema: str, table: str, column: str, dimensions: int) -> sql.Composed:
    """The specification's columns, added where the table lacks them (and only then dropped)."""
    types = {
        "embedding": sql.SQL("vector({})").format(sql.Literal(dimensions)),
        "embedding_generated_at": sql.SQL("timestamptz"),
        "embedding_model": sql.SQL("varchar(100)"),
    }
    return sql.SQL("ALTER TABLE {}.{} ADD COLUMN {} {}").format(
        sql.Identifier(src_schema), sql.Identifier(table), sql.Identifier(column), types[column]
    )


def drop_column(src: Source, column: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
        table(src), sql.Identifier(column)
    )


DROP_SCHEMA = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA))
CREATE_SCHEMA = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA))

# ------------------------------------------------------------------ the mirror, two writers


def mirror_counts(src: Source) -> sql.Composed:
    """Per clip, the adopted table's vector against clipembed's: *foreign* (written by another
    writer: another model or time, or a vector where clipembed has none) and *missing* (emptied
    by someone else while clipembed holds one)."""
    assert src.generated_at_type is not None
    return sql.SQL(
        """
SELECT count(*) FILTER (WHERE s.embedding IS NOT NULL AND (c.embedding IS NULL
           OR s.embedding_model IS DISTINCT FROM c.embedding_model
           OR s.embedding_generated_at IS DISTINCT FROM c.embedding_generated_at::{gtype})),
       count(*) FILTER (WHERE s.embedding IS NULL AND c.embedding IS NOT NULL)
FROM {table} s JOIN {schema}.clips c ON c.id = s.{id}
"""
    ).format(
        table=table(src),
        schema=sql.Identifier(SCHEMA),
        id=column(src, "id"),
        gtype=sql.SQL(src.generated_at_type),
    )


def restore_page(src: Source, *, replace_foreign: bool) -> sql.Composed:
    """Copy clipembed's vectors back into the adopted table for one key range (``%(after)s``,
    ``%(upto)s``): where its vector is missing and, with ``replace_foreign``, where another
    writer's vector sits. No provider call: the shadow holds the active space's vectors."""
    assert src.generated_at_type is not None
    foreign = sql.SQL(
        " OR s.embedding_model IS DISTINCT FROM c.embedding_model"
        " OR s.embedding_generated_at IS DISTINCT FROM c.embedding_generated_at::{}"
    ).format(sql.SQL(src.generated_at_type))
    return sql.SQL(
        """
UPDATE {table} s SET embedding = c.embedding, embedding_model = c.embedding_model,
    embedding_generated_at = c.embedding_generated_at
FROM {schema}.clips c
WHERE c.id = s.{id} AND c.id > %(after)s AND c.id <= %(upto)s AND c.embedding IS NOT NULL
  AND (s.embedding IS NULL{foreign})
"""
    ).format(
        table=table(src),
        schema=sql.Identifier(SCHEMA),
        id=column(src, "id"),
        foreign=foreign if replace_foreign else sql.SQL(""),
    )


RESTORE_KEYS = sql.SQL(
    "SELECT id FROM (SELECT id FROM {schema}.clips WHERE id > %s ORDER BY id LIMIT %s) t"
    " ORDER BY id DESC LIMIT 1"
).format(schema=sql.Identifier(SCHEMA))


# ------------------------------------------------------------------ reads for search and import


#: what a search result shows where the adopted table holds NULL (or lacks the column)
NOT_NULL_DEFAULTS = {
    "twitch_clip_url": "''",
    "embed_url": "''",
    "title": "''",
    "creator_name": "''",
    "broadcaster_name": "''",
    "view_count": "0",
    "vote_score": "0",
    "is_nsfw": "false",
}


def clip_rows_function(src: Source) -> sql.Composed:
    """``clipembed.clip_rows(ids)``, what a search result shows, read from the adopted table
    itself (live view counts and votes; NULL where it lacks a column). Same signature as
    migration 0010's owned version; a string body, so no catalog dependency on the columns."""
    types = {
        "id": "uuid",
        "twitch_clip_id": "text",
        "twitch_clip_url": "text",
        "embed_url": "text",
        "title": "text",
        "creator_name": "text",
        "broadcaster_name": "text",
        "game_name": "text",
        "language": "text",
        "thumbnail_url": "text",
        "duration": "double precision",
        "view_count": "integer",
        "vote_score": "integer",
        "created_at": "timestamptz",
        "is_nsfw": "boolean",
    }
    mapped = {canonical: field for field, canonical in FIELDS.items()}
    cols: list[sql.Composable] = []
    for name, typ in types.items():
        if name in mapped:
            value: sql.Composable = sql.SQL("s.{}").format(column(src, mapped[name]))
        elif name == "twitch_clip_id":
            value = twitch_id(src, "s")
        elif name in src.display:
            value = sql.SQL("s.{}").format(sql.Identifier(name))
        else:
            value = sql.SQL("NULL")
        default = NOT_NULL_DEFAULTS.get(name)
        if default is not None:  # the API's result model requires these (NULL in some rows)
            value = sql.SQL("coalesce({}::{}, {})").format(value, sql.SQL(typ), sql.SQL(default))
        cols.append(sql.SQL("{}::{}").format(value, sql.SQL(typ)))
    body = sql.SQL("SELECT {} FROM {} s WHERE s.{} = ANY(ids)").format(
        sql.SQL(", ").join(cols), table(src), column(src, "id")
    )
    return sql.SQL(
        """
CREATE OR REPLACE FUNCTION {schema}.clip_rows(ids uuid[])
RETURNS TABLE ({columns}) LANGUAGE sql STABLE AS $f$ {body} $f$
"""
    ).format(
        schema=sql.Identifier(SCHEMA),
        columns=sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in types.items()
        ),
        body=body,
    )


def importtable(src: Source) -> sql.Composed:
    """Where ``clipembed import`` writes on an adopted installation: the table itself (its
    triggers bring each clip into clipembed's shadow)."""
    return table(src)
