"""Schema migrations: numbered ``NNNN_name.up.sql`` / ``.down.sql`` pairs in ``db/schema/``.

Applied versions are recorded in ``clipembed_migrations``. Every run takes a transaction-level
advisory lock first, so two ``clipembed migrate up`` started at once apply each migration exactly
once: the second waits, then finds nothing left to do. Each migration runs in its own
transaction with its bookkeeping row, so a failure leaves the schema at the last good version.

Migration files may contain ``{dimensions}``; it is replaced by the (validated) integer
dimension of the embedding column, fixed when ``0002_embeddings`` is applied.

Two modes (:mod:`clipembed.source`): on a fresh database clipembed creates and owns ``clips``
and its tables live in ``public`` (as they always have); where a clips table exists before the
first migration it is *adopted*, and every migration runs with ``search_path = clipembed,
public`` so that what it creates — the shadow ``clipembed.clips`` included — lands in the
schema ``clipembed``. Every transaction here sets that search path (``SET LOCAL``); on an owned
installation the schema does not exist and the path falls through to ``public``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
from typing import Any

import psycopg

from clipembed import errors, source
from clipembed.source import adoption

LOCK_KEY = 0x636C6970_656D6264 & 0x7FFFFFFFFFFFFFFF  # "clipembd", a stable bigint
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS clipembed_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    params     jsonb NOT NULL DEFAULT '{}',
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


@dataclasses.dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied: bool
    applied_at: Any = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def available() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    files: dict[tuple[int, str], dict[str, str]] = {}
    root = importlib.resources.files("clipembed.db") / "schema"
    for entry in root.iterdir():
        m = _FILE.match(entry.name)
        if not m:
            continue
        files.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = entry.read_text("utf-8")
    out = []
    for (version, name), sides in sorted(files.items()):
        if set(sides) != {"up", "down"}:
            raise errors.SchemaError(f"migration {version:04d}_{name} lacks an up or down file")
        out.append(Migration(version, name, sides["up"], sides["down"]))
    return out


def _render(sql: str, dimensions: int) -> str:
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 16_000:
        raise errors.ConfigurationError(f"invalid embedding dimensions: {dimensions!r}")
    return sql.replace("{dimensions}", str(dimensions))


async def _lock(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    await conn.execute("SELECT set_config('search_path', %s, true)", (source.SEARCH_PATH,))


async def _applied(conn: psycopg.AsyncConnection[Any]) -> dict[int, tuple[Any, dict[str, Any]]]:
    cur = await conn.execute("SELECT to_regclass('clipembed_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return {}
    cur = await conn.execute("SELECT version, applied_at, params FROM clipembed_migrations")
    return {v: (at, params) for v, at, params in await cur.fetchall()}


async def use_search_path(conn: psycopg.AsyncConnection[Any]) -> None:
    """clipembed's search path for the rest of this session (see :data:`source.SEARCH_PATH`)."""
    await conn.execute("SELECT set_config('search_path', %s, false)", (source.SEARCH_PATH,))


async def status(conn: psycopg.AsyncConnection[Any]) -> list[MigrationStatus]:
    await use_search_path(conn)
    applied = await _applied(conn)
    return [
        MigrationStatus(
            m.version,
            m.name,
            m.version in applied,
            applied.get(m.version, (None, {}))[0],
            applied.get(m.version, (None, {}))[1],
        )
        for m in available()
    ]


async def up(
    conn: psycopg.AsyncConnection[Any],
    *,
    dimensions: int,
    mapping: source.Mapping | None = None,
) -> list[Migration]:
    """Apply every pending migration; returns those applied by this call.

    ``conn`` must be in autocommit mode; each migration gets its own transaction. ``mapping``
    names an existing clips table to adopt (default: Clipper's ``public.clips``); it is used
    only when that table exists before clipembed's first migration.
    """
    mapping = mapping or source.Mapping()
    async with conn.transaction():
        await _lock(conn)
        mode = await adoption.detect(conn, mapping)
        src = None
        if mode == "adopted":
            src = await adoption.prepare(conn, mapping, dimensions=dimensions)
    params = json.dumps({"dimensions": dimensions, "mode": mode})
    done: list[Migration] = []
    for migration in available():
        async with conn.transaction():
            await _lock(conn)
            await conn.execute(CREATE_TABLE)
            if migration.version in await _applied(conn):
                continue
            await conn.execute(_render(migration.up, dimensions).encode())
            if src is not None and migration.version == 1:
                await adoption.attach(conn, src)
            await conn.execute(
                "INSERT INTO clipembed_migrations (version, name, params) VALUES (%s, %s, %s)",
                (migration.version, migration.name, params),
            )
        done.append(migration)
    if mode == "adopted":
        async with conn.transaction():
            await _lock(conn)
            await adoption.refresh(conn, mapping, dimensions=dimensions)
    return done


async def down(
    conn: psycopg.AsyncConnection[Any], *, to: int | None = None, drop_clips: bool = False
) -> list[Migration]:
    """Roll back applied migrations newer than version ``to`` (default: only the newest).

    ``to=0`` rolls back everything. On an owned installation that drops the clips table and
    every clip in it, so it needs ``drop_clips``. On an adopted one it removes exactly what
    clipembed added (:func:`clipembed.source.adoption.remove`), keeping the table and its clips;
    the numbered migrations of an adopted installation are undone as a whole.
    """
    by_version = {m.version: m for m in available()}
    async with conn.transaction():
        await _lock(conn)
        applied = await _applied(conn)
        adopted = await adoption.load(conn) is not None
        newest = max(applied) if applied else 0
        target = (newest - 1) if to is None else to
        if applied and adopted and target < ADOPTED_FLOOR:
            if target != 0:
                raise errors.SchemaError(
                    "an adopted table's installation is removed as a whole: "
                    "`clipembed migrate down --to 0` (the table and its clips stay)"
                )
            await adoption.remove(conn)
            return [by_version[v] for v in sorted(applied, reverse=True) if v in by_version]
        if applied and not adopted and target < 1 and not drop_clips:
            raise errors.SchemaError(
                "rolling back 0001_clips drops the clips table and every clip in it: "
                "add --drop-clips to do that, or stop at --to 1"
            )
    undone: list[Migration] = []
    while True:
        async with conn.transaction():
            await _lock(conn)
            applied = await _applied(conn)
            if not applied:
                break
            version = max(applied)
            if to is None:
                to = version - 1
            if version <= to:
                break
            migration = by_version.get(version)
            if migration is None:
                raise errors.SchemaError(
                    f"the database has migration {version}, which this clipembed does not know"
                )
            dims = int(applied[version][1].get("dimensions", 1))
            await conn.execute(_render(migration.down, dims).encode())
            await conn.execute("DELETE FROM clipembed_migrations WHERE version = %s", (version,))
        undone.append(migration)
    return undone


#: an adopted installation's numbered migrations up to this one are undone only together
ADOPTED_FLOOR = 9


async def embedding_dimensions(conn: psycopg.AsyncConnection[Any]) -> int | None:
    """The dimension of ``clips.embedding``, or None when the column does not exist."""
    cur = await conn.execute(
        """
        SELECT a.atttypmod FROM pg_attribute a
        WHERE a.attrelid = to_regclass('clips') AND a.attname = 'embedding' AND NOT a.attisdropped
        """
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def check_current(conn: psycopg.AsyncConnection[Any], *, dimensions: int) -> None:
    """Raise SchemaError unless every migration is applied with these dimensions."""
    pending = [s for s in await status(conn) if not s.applied]
    if pending:
        names = ", ".join(f"{s.version:04d}_{s.name}" for s in pending)
        raise errors.SchemaError(
            f"the database needs migrating ({names}): run `clipembed migrate up`"
        )
    adopted = await adoption.load(conn)
    if adopted is not None:
        await adoption.check(conn, adopted)
    # The environment configures the 'default' embedding space (migration 0009); once it has been
    # dropped, every space carries its own model and the configured dimensions do not matter.
    cur = await conn.execute("SELECT count(*) FROM embedding_spaces WHERE provider IS NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return
    column = await embedding_dimensions(conn)
    if column != dimensions:
        raise errors.SchemaError(
            f"clips.embedding is vector({column}) but the configuration gives {dimensions} "
            "dimensions: set EMBEDDING_DIMENSIONS to match, or re-create the column with "
            "`clipembed migrate down --to 1` and `clipembed migrate up` (drops the embeddings)"
        )
