"""Embedding spaces: what they are, which one is active, and the operations on them.

A space is (provider, model, dimensions, text template version, storage). Its vectors live in a
table of its own (``embeddings_space_<id>``) with its own HNSW index, so adding a candidate,
filling it, comparing, promoting and dropping it never touch the active space's rows. One row
(``embedding_space_pointer``) names the active space and the previous one: promote and rollback
change that row in one transaction, so from one search to the next every search reads one space.

Every space that exists is *maintained*: workers embed each new or edited clip into all of them
(the active, a candidate being built, the previous one kept for rollback), so a candidate is
complete when its backfill ends and a rollback lands on a current space. Keeping a space costs
its embeddings for new clips: drop the previous one once the rollback window has passed.

The ``default`` space (created by migration 0009 from the installation as it was) has no
provider or model of its own: it is embedded "as configured" (EMBEDDING_PROVIDER,
EMBEDDING_MODEL), as clipembed always was. Spaces added with ``clipembed model add`` carry their
provider and model, so the database, not each process's environment, decides what they hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from clipembed import errors
from clipembed import settings as settings_mod
from clipembed.embedding import providers
from clipembed.store import batch_tables, space_registry, space_table, status_tables

Storage = Literal["vector", "halfvec"]
STORAGES: tuple[str, ...] = ("vector", "halfvec")
#: New spaces store half-precision vectors: half the table and index, recall@10 within 0.005 of
#: single precision at 100,000 clips (docs/benchmarks.md "vector vs halfvec").
DEFAULT_STORAGE: Storage = "halfvec"
#: pgvector's HNSW limits per storage type.
HNSW_MAX_DIMENSIONS = {"vector": 2000, "halfvec": 4000}
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
DEFAULT_NAME = "default"


class SpaceError(errors.ClipembedError):
    """An operation on spaces that cannot be done as asked (the CLI prints the message)."""


@dataclasses.dataclass(frozen=True)
class Space:
    id: int
    name: str
    provider: str | None  # None: as configured (the default space)
    model: str | None
    dimensions: int
    storage: str
    template_version: int
    table_name: str
    created_at: dt.datetime | None = None
    promoted_at: dt.datetime | None = None
    active: bool = False
    previous: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Space:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row})

    @property
    def configured(self) -> bool:
        """Whether the environment decides the provider and model (the default space)."""
        return self.provider is None

    @property
    def index_name(self) -> str:
        return f"{self.table_name}_hnsw"

    @property
    def state(self) -> str:
        if self.active:
            return "active"
        return "previous" if self.previous else "candidate"

    def settings_for(self, cfg: settings_mod.Settings) -> settings_mod.Settings:
        """The settings that embed into this space: the environment's, with its model."""
        if self.configured:
            return cfg
        update: dict[str, Any] = {
            "embedding_provider": self.provider,
            "embedding_model": self.model,
            "embedding_dimensions": self.dimensions,
            "embedding_local_model_path": None,
            "embedding_multilingual": None,
        }
        if (
            providers.capabilities(self.provider or cfg.embedding_provider).model_paths
            and self.model
            and ("/" in self.model or Path(self.model).exists())
        ):
            update["embedding_local_model_path"] = Path(self.model)
        return cfg.model_copy(update=update)

    def model_for(self, cfg: settings_mod.Settings) -> str:
        return self.model if self.model is not None else cfg.model

    def describe(self, cfg: settings_mod.Settings | None = None) -> dict[str, Any]:
        """What a search response or ``model list --json`` says about the space."""
        model = self.model if self.model is not None or cfg is None else cfg.model
        provider = (
            self.provider if self.provider is not None or cfg is None else cfg.embedding_provider
        )
        return {
            "name": self.name,
            "provider": provider,
            "model": model,
            "dimensions": self.dimensions,
            "storage": self.storage,
        }


async def all_spaces(conn: psycopg.AsyncConnection[Any]) -> list[Space]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(space_registry.ALL)
        return [Space.from_row(r) for r in await cur.fetchall()]


async def active(conn: psycopg.AsyncConnection[Any]) -> Space:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(space_registry.ACTIVE)
        row = await cur.fetchone()
    if row is None:
        raise errors.SchemaError("no active embedding space: run `clipembed migrate up`")
    return Space.from_row(row)


async def active_in(pool: AsyncConnectionPool) -> Space:
    async with pool.connection() as conn:
        space = await active(conn)
        await conn.commit()
        return space


async def by_name(conn: psycopg.AsyncConnection[Any], name: str) -> Space:
    for space in await all_spaces(conn):
        if space.name == name:
            return space
    raise SpaceError(f"no embedding space named {name!r} (see `clipembed model list`)")


def check_new(name: str, *, provider: str, model: str, dimensions: int, storage: str) -> None:
    """Validate ``model add``'s arguments before anything is written (pure)."""
    if not NAME.match(name):
        raise SpaceError(
            f"invalid space name {name!r}: lower-case letters, digits, '-' and '_', "
            "starting with a letter, at most 40 characters"
        )
    if provider not in providers.REGISTRY:
        raise SpaceError(f"unknown provider {provider!r}: use {' or '.join(providers.names())}")
    if not model.strip():
        raise SpaceError("the model name is empty")
    if storage not in STORAGES:
        raise SpaceError(f"unknown storage {storage!r}: use vector or halfvec")
    limit = HNSW_MAX_DIMENSIONS[storage]
    if not 1 <= dimensions <= limit:
        raise SpaceError(
            f"{dimensions} dimensions cannot be indexed with {storage} storage "
            f"(pgvector's HNSW takes 1 to {limit})"
        )
    known = providers.capabilities(provider).known(model)
    if known is not None:
        if not known.shortenable and dimensions != known.native_dimensions:
            raise SpaceError(f"{model} always returns {known.native_dimensions} dimensions")
        if dimensions > known.native_dimensions:
            raise SpaceError(f"{model} gives at most {known.native_dimensions} dimensions")


async def add(
    conn: psycopg.AsyncConnection[Any],
    name: str,
    *,
    provider: str,
    model: str,
    dimensions: int,
    storage: str = DEFAULT_STORAGE,
    build: space_table.IndexBuild = space_table.DEFAULT_BUILD,
) -> Space:
    """Create a candidate space: its row, its table (with the mirror triggers) and its index
    (``build``: its HNSW parameters)."""
    check_new(name, provider=provider, model=model, dimensions=dimensions, storage=storage)
    async with conn.transaction():
        for space in await all_spaces(conn):
            if space.name == name:
                raise SpaceError(f"a space named {name!r} exists already")
        cur = await conn.execute(
            space_registry.INSERT,
            {
                "name": name,
                "provider": provider,
                "model": model,
                "dimensions": dimensions,
                "storage": storage,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        space_id = int(row[0])
        table = f"embeddings_space_{space_id}"
        await conn.execute(space_registry.SET_TABLE_NAME, (table, space_id))
        await conn.execute(space_registry.CREATE_TABLE, (space_id,))
        await conn.execute(space_table.create_index(table, f"{table}_hnsw", storage, build))
        await conn.execute(space_registry.REFRESH_VIEW)
        await _event(
            conn,
            "space_added",
            {"space": name, "model": model, "dimensions": dimensions, "storage": storage},
        )
        await conn.execute(space_registry.NOTIFY, (name,))
    return await by_name(conn, name)


async def drop(conn: psycopg.AsyncConnection[Any], name: str) -> Space:
    """Drop a space that is not active: its table, index and row."""
    async with conn.transaction():
        await conn.execute(space_registry.LOCK_POINTER)
        space = await by_name(conn, name)
        if space.active:
            raise SpaceError(
                f"{name!r} is the active space: promote another one first, then drop it"
            )
        cur = await conn.execute(batch_tables.OPEN_FOR_SPACE, (space.id,))
        row = await cur.fetchone()
        if row and row[0]:
            raise SpaceError(
                f"{row[0]} Batch API batch(es) of {name!r} are still open: "
                "wait for them or cancel them (`clipembed batches cancel`)"
            )
        await conn.execute(space_registry.DELETE, (space.id,))
        await conn.execute(space_registry.REFRESH_VIEW)  # the view no longer reads the table
        await conn.execute(space_table.drop_table(space.table_name))
        await _event(conn, "space_dropped", {"space": name})
        await conn.execute(space_registry.NOTIFY, (name,))
    return space


async def promote(conn: psycopg.AsyncConnection[Any], name: str) -> tuple[Space, Space]:
    """Make ``name`` the active space; the active one becomes the previous. Returns (old, new).

    One transaction over one row: a search reads the pointer once and then only that space.
    Whether the candidate is complete is the caller's check (:func:`missing`).
    """
    async with conn.transaction():
        await conn.execute(space_registry.LOCK_POINTER)
        target = await by_name(conn, name)
        current = await active(conn)
        if target.id == current.id:
            raise SpaceError(f"{name!r} is already the active space")
        await conn.execute(
            space_registry.SET_POINTER, {"active": target.id, "previous": current.id}
        )
        await conn.execute(space_registry.MARK_PROMOTED, (target.id,))
        await _event(conn, "space_promoted", {"space": name, "previous": current.name})
        await conn.execute(space_registry.NOTIFY, (name,))
    return current, target


async def rollback(conn: psycopg.AsyncConnection[Any]) -> tuple[Space, Space]:
    """Back to the previous space (kept current by the workers). Returns (old, new)."""
    async with conn.transaction():
        cur = await conn.execute(space_registry.LOCK_POINTER)
        row = await cur.fetchone()
        assert row is not None
        active_id, previous_id = row
        if previous_id is None:
            raise SpaceError(
                "there is no previous space to roll back to (it was dropped, or "
                "nothing was ever promoted)"
            )
        spaces = {s.id: s for s in await all_spaces(conn)}
        await conn.execute(
            space_registry.SET_POINTER, {"active": previous_id, "previous": active_id}
        )
        await _event(
            conn,
            "space_rolled_back",
            {"space": spaces[previous_id].name, "from": spaces[active_id].name},
        )
        await conn.execute(space_registry.NOTIFY, (spaces[previous_id].name,))
    return spaces[active_id], spaces[previous_id]


async def _event(conn: psycopg.AsyncConnection[Any], kind: str, detail: dict[str, Any]) -> None:
    await conn.execute(status_tables.EVENT, (kind, json.dumps(detail)))


@dataclasses.dataclass(frozen=True)
class Coverage:
    live: int
    embedded: int
    last_generated: dt.datetime | None
    table_bytes: int
    index_bytes: int

    @property
    def missing(self) -> int:
        return self.live - self.embedded

    @property
    def fraction(self) -> float:
        return self.embedded / self.live if self.live else 1.0


async def behind(conn: psycopg.AsyncConnection[Any], candidate: Space, current: Space) -> int:
    """How many live clips ``current`` answers for that ``candidate`` cannot, with nothing
    queued to fix it: 0 means a promote loses no clip from search (see space_table.behind)."""
    cur = await conn.execute(space_table.behind(candidate.table_name, current.table_name))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def coverage(conn: psycopg.AsyncConnection[Any], space: Space) -> Coverage:
    """Exact counts (a scan of the space's primary key: ~0.1-0.3 s per million clips)."""
    cur = await conn.execute(space_table.coverage(space.table_name))
    live, embedded, _, last = await cur.fetchone() or (0, 0, 0, None)
    cur = await conn.execute(
        space_table.SIZES, (space.table_name, space.table_name, space.index_name)
    )
    table_bytes, index_bytes = await cur.fetchone() or (0, 0)
    return Coverage(int(live), int(embedded), last, int(table_bytes), int(index_bytes))
