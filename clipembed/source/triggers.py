"""The functions and triggers clipembed installs around an adopted table, generated from its
mapping: the row trigger that keeps the shadow level, and the statement trigger on the shadow
that copies the active space's vectors into the table's own columns.

The adopted table belongs to the platform: clipembed puts nothing on it but the triggers named
in :data:`TRIGGERS`. They have no column list and no WHEN clause, so the catalog records no
dependency of clipembed on any of its columns (docs/notes/adoption.md).
"""

from __future__ import annotations

from psycopg import sql

from clipembed.source import SCHEMA, SEARCH_PATH, Source
from clipembed.source.queries import SHADOW_COLUMNS, column, hidden, table, values

#: the triggers clipembed puts on an adopted table, and nothing else
TRIGGERS = ("clipembed_sync", "clipembed_sync_truncate")

#: Writes one clip into the shadow, whose own triggers (keyword analysis, postings, the queue,
#: counters) do the rest. SET search_path: those triggers' functions name clipembed's tables
#: unqualified, and this runs in the platform's sessions.
APPLY_FUNCTION = sql.SQL(
    """
CREATE OR REPLACE FUNCTION {schema}.source_apply(
    p_id uuid, p_twitch_clip_id text, p_title text, p_creator text, p_broadcaster text,
    p_game text, p_language text, p_created_at timestamptz, p_hidden boolean
) RETURNS void LANGUAGE plpgsql SET search_path = {path} AS $f$
BEGIN
    INSERT INTO clips AS c ({cols})
    VALUES (p_id, p_twitch_clip_id, p_title, p_creator, p_broadcaster, p_game, p_language,
            p_created_at, p_hidden)
    ON CONFLICT (id) DO UPDATE SET twitch_clip_id = EXCLUDED.twitch_clip_id,
        title = EXCLUDED.title, creator_name = EXCLUDED.creator_name,
        broadcaster_name = EXCLUDED.broadcaster_name, game_name = EXCLUDED.game_name,
        language = EXCLUDED.language, created_at = EXCLUDED.created_at,
        is_removed = EXCLUDED.is_removed
    WHERE (c.twitch_clip_id, c.title, c.creator_name, c.broadcaster_name, c.game_name,
           c.language, c.created_at, c.is_removed)
       IS DISTINCT FROM (EXCLUDED.twitch_clip_id, EXCLUDED.title, EXCLUDED.creator_name,
           EXCLUDED.broadcaster_name, EXCLUDED.game_name, EXCLUDED.language,
           EXCLUDED.created_at, EXCLUDED.is_removed);
END
$f$
"""
).format(schema=sql.Identifier(SCHEMA), path=sql.SQL(SEARCH_PATH), cols=SHADOW_COLUMNS)

#: A clip gone from the adopted table: its shadow row goes, and with it (foreign keys, ON DELETE
#: CASCADE) its queue item, postings, vectors in every space and batch items.
FORGET_FUNCTION = sql.SQL(
    """
CREATE OR REPLACE FUNCTION {schema}.source_forget(p_id uuid)
RETURNS void LANGUAGE plpgsql SET search_path = {path} AS $f$
BEGIN
    DELETE FROM clips WHERE id = p_id;
END
$f$
"""
).format(schema=sql.Identifier(SCHEMA), path=sql.SQL(SEARCH_PATH))

TRUNCATE_FUNCTION = sql.SQL(
    """
CREATE OR REPLACE FUNCTION {schema}.source_truncate()
RETURNS trigger LANGUAGE plpgsql SET search_path = {path} AS $f$
BEGIN
    TRUNCATE clips CASCADE;
    DELETE FROM clipembed_counters;
    RETURN NULL;
END
$f$
"""
).format(schema=sql.Identifier(SCHEMA), path=sql.SQL(SEARCH_PATH))


def sync_function(src: Source) -> sql.Composed:
    """The row trigger on the adopted table. Its first test is the hot path: an UPDATE that
    changes nothing clipembed watches (view counts, votes, the platform's own columns, the
    mirror's own writes) returns at once, without a SET or a write."""
    watched = [column(src, f) for f in ("title", "creator", "broadcaster", "game", "language")]
    watched.append(column(src, "created_at"))
    if src.twitch_clip_id is not None:
        watched.append(sql.Identifier(src.twitch_clip_id))
    # one row comparison: plpgsql evaluates it as one expression, not one per column
    columns = [column(src, "id"), *watched]
    unchanged = sql.SQL("({old}, {old_hidden}) IS NOT DISTINCT FROM ({new}, {new_hidden})").format(
        old=sql.SQL(", ").join(sql.SQL("OLD.{}").format(c) for c in columns),
        new=sql.SQL(", ").join(sql.SQL("NEW.{}").format(c) for c in columns),
        old_hidden=hidden(src, "OLD"),
        new_hidden=hidden(src, "NEW"),
    )
    return sql.SQL(
        """
CREATE OR REPLACE FUNCTION {schema}.source_sync() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF {unchanged} THEN
            RETURN NULL;
        END IF;
        IF OLD.{id} IS DISTINCT FROM NEW.{id} THEN
            PERFORM {schema}.source_forget(OLD.{id});
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM {schema}.source_forget(OLD.{id});
        RETURN NULL;
    END IF;
    PERFORM {schema}.source_apply({values});
    RETURN NULL;
END
$f$
"""
    ).format(
        schema=sql.Identifier(SCHEMA),
        unchanged=unchanged,
        id=column(src, "id"),
        values=sql.SQL(", ").join(values(src, "NEW")),
    )


def create_triggers(src: Source) -> list[sql.Composed]:
    target = table(src)
    schema = sql.Identifier(SCHEMA)
    return [
        sql.SQL(
            "CREATE TRIGGER clipembed_sync AFTER INSERT OR UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION {schema}.source_sync()"
        ).format(table=target, schema=schema),
        sql.SQL(
            "CREATE TRIGGER clipembed_sync_truncate AFTER TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION {schema}.source_truncate()"
        ).format(table=target, schema=schema),
    ]


def drop_triggers(src: Source) -> list[sql.Composed]:
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
            name=sql.Identifier(name), table=table(src)
        )
        for name in TRIGGERS
    ]


HAS_TRIGGER = """
SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s
"""


def mirror_function(src: Source) -> sql.Composed:
    """Statement trigger on the shadow: its vector columns (the active space's mirror, kept by
    migration 0009's trigger) are copied to the adopted table's, in their types. When those
    columns are gone (the platform rolled back its migration) the copy is skipped, not the
    write: ``clipembed backfill`` restores the mirror once they are back."""
    body: sql.Composable
    if not src.has_vector_columns:
        body = sql.SQL("RETURN NULL;")
    else:
        body = sql.SQL(
            """
    UPDATE {table} s SET embedding = n.embedding, embedding_model = n.embedding_model,
        embedding_generated_at = n.embedding_generated_at
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE s.{id} = n.id
      AND (n.embedding IS DISTINCT FROM o.embedding
           OR n.embedding_model IS DISTINCT FROM o.embedding_model
           OR n.embedding_generated_at IS DISTINCT FROM o.embedding_generated_at);
    RETURN NULL;
EXCEPTION WHEN undefined_column OR undefined_table OR datatype_mismatch OR data_exception THEN
    RAISE WARNING 'clipembed: % copying vectors to %: the mirror is restored by the next backfill',
        SQLERRM, {where};
    RETURN NULL;"""
        ).format(table=table(src), id=column(src, "id"), where=sql.Literal(src.mapping.qualified))
    return sql.SQL(
        """
CREATE OR REPLACE FUNCTION {schema}.source_mirror() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
{body}
END
$f$
"""
    ).format(schema=sql.Identifier(SCHEMA), body=body)


MIRROR_TRIGGER = sql.SQL(
    """
DROP TRIGGER IF EXISTS clipembed_source_mirror ON {schema}.clips;
CREATE TRIGGER clipembed_source_mirror AFTER UPDATE ON {schema}.clips
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.source_mirror()
"""
).format(schema=sql.Identifier(SCHEMA))
