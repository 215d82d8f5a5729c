"""Adopting an existing clips table: detect, install, refresh, check and remove, exactly.

Called by :mod:`clipembed.db.migrations` under its advisory lock, inside its transactions:

1. :func:`detect` — owned or adopted. An installation keeps the mode it was made in; a new one
   adopts the table named by ``CLIPEMBED_SOURCE_TABLE`` when it exists.
2. :func:`prepare` — before the first migration: the schema ``clipembed``, pgvector (in
   ``public``, where the platform's own migrations look for it), the specification's vector
   columns where the table lacks them (recorded, so that only those are ever dropped).
3. The numbered migrations then run with ``search_path = clipembed, public``: the clips table
   they create is the shadow ``clipembed.clips``, and everything else lands beside it.
4. :func:`attach` — in migration 0001's transaction: the triggers on the adopted table, then
   the copy of its rows (the triggers first: their lock holds writers back until the copy
   commits, so no row is missed).
5. :func:`refresh` — at the end of every ``migrate up``: the trigger functions regenerated from
   the settings, the mirror trigger, the shadow brought level with the table.
6. :func:`remove` — ``migrate down --to 0``: the triggers, the schema, the columns clipembed
   added, pgvector if clipembed installed it. Nothing else.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import psycopg

from clipembed import errors, source
from clipembed.source import queries, triggers

logger = logging.getLogger(__name__)

RESTORE_PAGE = 5_000  # clips per transaction when restoring the mirror


async def _columns(conn: psycopg.AsyncConnection[Any], mapping: source.Mapping) -> dict[str, str]:
    cur = await conn.execute(queries.TABLE_COLUMNS, (mapping.schema, mapping.table))
    return {name: typ for name, typ in await cur.fetchall()}


async def _exists(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> bool:
    cur = await conn.execute(queries.TABLE_EXISTS, (schema, table))
    return await cur.fetchone() is not None


async def detect(conn: psycopg.AsyncConnection[Any], mapping: source.Mapping) -> source.Mode:
    """``adopted`` when clipembed's schema holds its migrations, or when nothing of clipembed is
    installed yet and the configured table exists; ``owned`` otherwise."""
    if await _exists(conn, source.SCHEMA, "clipembed_migrations"):
        return "adopted"
    if await _exists(conn, "public", "clipembed_migrations"):
        return "owned"
    if await _exists(conn, mapping.schema, mapping.table):
        return "adopted"
    return "owned"


async def load(conn: psycopg.AsyncConnection[Any]) -> source.Source | None:
    """The adopted table as recorded by ``migrate up``; None on an owned installation."""
    if not await _exists(conn, source.SCHEMA, "source_config"):
        return None
    cur = await conn.execute(queries.READ_CONFIG)
    row = await cur.fetchone()
    if row is None:
        return None
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return source.Source.from_json(data)


async def _record(
    conn: psycopg.AsyncConnection[Any],
    src: source.Source,
    *,
    added: list[str] | None = None,
    created_extension: bool | None = None,
) -> None:
    cur = await conn.execute(queries.READ_CONFIG)
    row = await cur.fetchone()
    old_added = list(row[1]) if row else []
    old_ext = bool(row[2]) if row else False
    await conn.execute(
        queries.WRITE_CONFIG,
        (
            src.to_json(),
            sorted(set(old_added) | set(added or [])),
            old_ext if created_extension is None else created_extension,
        ),
    )


async def prepare(
    conn: psycopg.AsyncConnection[Any], mapping: source.Mapping, *, dimensions: int
) -> source.Source:
    """Check the table against the mapping and make room for clipembed beside it."""
    columns = await _columns(conn, mapping)
    src = source.resolve(mapping, columns)  # raises SchemaError naming a missing column
    embedding_type = columns.get("embedding")
    if embedding_type is not None:
        if not embedding_type.startswith("vector("):
            raise errors.SchemaError(
                f"{mapping.qualified}.embedding is {embedding_type}, not a pgvector vector: "
                "clipembed keeps the specification's vector(N) column current and cannot use it"
            )
        existing = int(embedding_type.removeprefix("vector(").rstrip(")"))
        if existing != dimensions:
            raise errors.SchemaError(
                f"{mapping.qualified}.embedding is vector({existing}) but the configuration "
                f"gives {dimensions} dimensions: set EMBEDDING_DIMENSIONS={existing} (another "
                "size can be added later as an embedding space: `clipembed model add`)"
            )
    await conn.execute(queries.CREATE_SCHEMA)
    await conn.execute(queries.CREATE_CONFIG)
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    created_extension = await cur.fetchone() is None
    if created_extension:
        # in public, where the platform's own migrations (CREATE EXTENSION IF NOT EXISTS
        # vector; vector(768)) find it
        await conn.execute("CREATE EXTENSION vector SCHEMA public")
    added = []
    for column in source.missing_vector_columns(columns):
        await conn.execute(
            queries.add_vector_column(mapping.schema, mapping.table, column, dimensions)
        )
        added.append(column)
    if added:
        columns = await _columns(conn, mapping)
        src = source.resolve(mapping, columns)
    await _record(conn, src, added=added, created_extension=created_extension or None)
    return src


async def _functions(conn: psycopg.AsyncConnection[Any], src: source.Source) -> None:
    """The trigger functions, regenerated from the mapping (CREATE OR REPLACE)."""
    for statement in (
        triggers.APPLY_FUNCTION,
        triggers.FORGET_FUNCTION,
        triggers.TRUNCATE_FUNCTION,
    ):
        await conn.execute(statement)
    await conn.execute(triggers.sync_function(src))


async def attach(conn: psycopg.AsyncConnection[Any], src: source.Source) -> None:
    """After migration 0001 made the shadow: the triggers on the table, then its rows."""
    await conn.execute(queries.WIDEN_SHADOW)
    await _functions(conn, src)
    for statement in triggers.create_triggers(src):
        await conn.execute(statement)
    await conn.execute(queries.copy_into_shadow(src))


async def refresh(
    conn: psycopg.AsyncConnection[Any], mapping: source.Mapping, *, dimensions: int
) -> source.Source:
    """At the end of every ``migrate up``: the mapping re-resolved (settings may have changed:
    another flag hides clips), the functions regenerated, the shadow brought level."""
    src = await prepare(conn, mapping, dimensions=dimensions)
    await _functions(conn, src)
    for name, statement in zip(triggers.TRIGGERS, triggers.create_triggers(src), strict=True):
        cur = await conn.execute(
            triggers.HAS_TRIGGER, (src.mapping.schema, src.mapping.table, name)
        )
        if await cur.fetchone() is None:
            await conn.execute(statement)
    await conn.execute(triggers.mirror_function(src))
    await conn.execute(triggers.MIRROR_TRIGGER)
    await conn.execute(queries.clip_rows_function(src))
    await conn.execute(queries.copy_into_shadow(src))
    await conn.execute(queries.forget_vanished(src))
    return src


async def remove(conn: psycopg.AsyncConnection[Any]) -> None:
    """Everything clipembed added to an adopted database, and nothing else."""
    src = await load(conn)
    added: list[str] = []
    created_extension = False
    if src is not None:
        cur = await conn.execute(queries.READ_CONFIG)
        row = await cur.fetchone()
        if row is not None:
            added, created_extension = list(row[1]), bool(row[2])
    if src is not None:
        for statement in triggers.drop_triggers(src):
            await conn.execute(statement)
    await conn.execute(queries.DROP_SCHEMA)
    if src is not None:
        for column in added:
            await conn.execute(queries.drop_column(src, column))
    if created_extension:
        # only if nothing of the platform's uses it meanwhile (its own migration may have)
        cur = await conn.execute(
            """SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
               WHERE e.extname = 'vector' AND d.deptype = 'n'"""
        )
        users = (await cur.fetchone() or (0,))[0]
        if not users:
            await conn.execute("DROP EXTENSION IF EXISTS vector")


async def check(conn: psycopg.AsyncConnection[Any], src: source.Source) -> None:
    """At start-up: the recorded columns still exist (one clear error naming any missing)."""
    columns = await _columns(conn, src.mapping)
    if not columns:
        raise errors.SchemaError(
            f"the adopted table {src.mapping.qualified} does not exist any more "
            "(`clipembed migrate down --to 0` removes clipembed's part of the database)"
        )
    source.resolve(
        source.Mapping(
            schema=src.mapping.schema,
            table=src.mapping.table,
            columns=src.mapping.columns,
            hidden_when=src.hidden,
            foreign_vectors=src.mapping.foreign_vectors,
        ),
        columns,
    )


async def mirror_state(conn: psycopg.AsyncConnection[Any], src: source.Source) -> tuple[int, int]:
    """(foreign, missing) vectors in the adopted table's embedding column; (0, 0) without one."""
    if not src.has_vector_columns:
        return 0, 0
    columns = await _columns(conn, src.mapping)
    if any(c not in columns for c in source.VECTOR_COLUMNS):
        # the platform rolled its migration back: every vector clipembed holds is missing there
        cur = await conn.execute("SELECT count(*) FROM clipembed.clips WHERE embedding IS NOT NULL")
        return 0, int((await cur.fetchone() or (0,))[0])
    cur = await conn.execute(queries.mirror_counts(src))
    row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def restore_mirror(conn: psycopg.AsyncConnection[Any], src: source.Source) -> int:
    """Copy clipembed's vectors back where the table's are missing (and foreign ones, unless
    CLIPEMBED_FOREIGN_VECTORS=keep), page by page. No provider call. Returns rows written."""
    if not src.has_vector_columns:
        return 0
    columns = await _columns(conn, src.mapping)
    if any(c not in columns for c in source.VECTOR_COLUMNS):
        return 0
    statement = queries.restore_page(src, replace_foreign=src.mapping.foreign_vectors == "replace")
    after = uuid.UUID(int=0)
    written = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(queries.RESTORE_KEYS, (after, RESTORE_PAGE))
            row = await cur.fetchone()
            upto = row[0] if row else None
            if upto is None:
                break
            cur = await conn.execute(statement, {"after": after, "upto": upto})
            written += cur.rowcount
        after = upto
    if written:
        logger.info("restored %d vectors into %s", written, src.mapping.qualified)
    return written
