"""Whether a backfill drops the HNSW index and builds it once at the end, and the build itself.

When most of a large table is unembedded and the load will run faster than PostgreSQL can
maintain the graph row by row, building the index once after loading is several times faster
(docs/benchmarks.md). Below that rate (a remote provider under its request limit) the database
keeps up with the provider and maintaining the index while waiting for the limit is free.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from clipembed.db import queries
from clipembed.spaces import queries as space_queries

if TYPE_CHECKING:
    from clipembed.service import EmbeddingService
    from clipembed.spaces import Space

IndexMode = Literal["auto", "keep", "rebuild"]
INDEX_MODES: tuple[str, ...] = ("auto", "keep", "rebuild")

REBUILD_MIN_ROWS = 1_000  # below this the index is cheap either way; keep it for live search
REBUILD_FRACTION = 0.5  # rebuild when more than this fraction of live clips needs embedding
#: Above this many clips/s allowed by the request limit, index maintenance would slow the load.
INCREMENTAL_INDEX_RATE = 1000.0


def load_outpaces_index(
    service: EmbeddingService, requests_per_minute: int, batch_size: int
) -> bool:
    """Will this load go faster than the database can maintain the index incrementally?

    A local model competes with PostgreSQL for the same cores; a remote provider is bound by
    its request limit, and below INCREMENTAL_INDEX_RATE clips/s the index keeps up for free.
    """
    if not getattr(service.provider, "parallel_requests", True):
        return True
    per_request = min(batch_size, service.provider.max_inputs_per_request)
    return bool(requests_per_minute / 60 * per_request >= INCREMENTAL_INDEX_RATE)


def wants_rebuild(mode: str, *, live: int, expected: int, outpaces: bool) -> bool:
    """The decision, pure: ``rebuild`` always; ``auto`` for a large, mostly empty table."""
    if mode == "rebuild":
        return True
    return (
        mode == "auto"
        and live >= REBUILD_MIN_ROWS
        and expected > REBUILD_FRACTION * live
        and outpaces
    )


async def index_exists(pool: AsyncConnectionPool, space: Space) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(space_queries.INDEX_EXISTS, (space.index_name,))
        row = await cur.fetchone()
        return bool(row and row[0])


async def drop_index(pool: AsyncConnectionPool, space: Space) -> None:
    async with pool.connection() as conn:
        await conn.execute(space_queries.drop_index(space.index_name))


async def rebuild_index(pool: AsyncConnectionPool, space: Space, *, workers: int = 2) -> None:
    """Build a space's HNSW index with enough memory to do it in one pass, with ``workers``
    parallel workers (CLIPEMBED_INDEX_BUILD_WORKERS: 0 leaves the cores to search)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            for setting in queries.index_build_settings(workers):
                # a server that refuses a setting still builds the index, only slower
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(setting)
            await conn.execute(queries.NO_STATEMENT_TIMEOUT)  # a build takes what it takes
            await conn.execute(
                space_queries.create_index(space.table_name, space.index_name, space.storage)
            )
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(queries.RESET_STATEMENT_TIMEOUT)
            await conn.set_autocommit(False)
