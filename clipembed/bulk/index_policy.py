"""Whether a backfill drops the HNSW index and builds it once at the end, and the build itself.

When most of a large table is unembedded and the load runs faster than PostgreSQL can maintain
the graph row by row, building the index once after loading is several times faster
(docs/benchmarks.md). Whether it does is *measured*, not assumed: a load whose request limit
already exceeds INCREMENTAL_INDEX_RATE drops the index at the start; any other ``auto`` load
starts with the index kept and a :class:`Probe` watches its first batches. When the database
write takes WRITE_BOUND_SHARE or more of a batch's time (the provider call, limiter waits
included, is the rest), the load is waiting for the index, not for the provider: the index is
dropped then and built once at the end. (Measured at 20,000 clips, 1,536 dimensions, the
default 500 requests/min: with the index kept the database spent 112 CPU-s on row-by-row graph
inserts and the backfill reached 0.73 of its request ceiling.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from clipembed.db import connection, priority
from clipembed.store import space_table

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbeddingService
    from clipembed.spaces import Space

logger = logging.getLogger(__name__)

IndexMode = Literal["auto", "keep", "rebuild"]
INDEX_MODES: tuple[str, ...] = ("auto", "keep", "rebuild")

REBUILD_MIN_ROWS = 1_000  # below this the index is cheap either way; keep it for live search
REBUILD_FRACTION = 0.5  # rebuild when more than this fraction of live clips needs embedding
#: Above this many clips/s allowed by the request limit, index maintenance would slow the load.
INCREMENTAL_INDEX_RATE = 1000.0
#: The probe: at least this many batches and seconds of the load with the index kept ...
PROBE_BATCHES = 6
PROBE_SECONDS = 3.0
#: ... and the index is dropped when the database write takes this share of a batch's time.
WRITE_BOUND_SHARE = 0.35


def load_outpaces_index(
    service: EmbeddingService, requests_per_minute: int, batch_size: int
) -> bool:
    """Will this load go faster than the database can maintain the index incrementally?

    A local model competes with PostgreSQL for the same cores; a remote provider is bound by
    its request limit, and below INCREMENTAL_INDEX_RATE clips/s the index keeps up for free.
    """
    if not service.provider.capabilities.parallel_requests:
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


@dataclasses.dataclass
class Probe:
    """The first batches of an ``auto`` load with the index kept: is the database the bound?

    ``add`` each batch's embed and write seconds; :meth:`verdict` answers once, after
    PROBE_BATCHES batches and PROBE_SECONDS: ``True`` (drop the index now, build it at the end),
    ``False`` (keep it), or ``None`` (not decided yet). ``remaining`` and ``live`` gate it as at
    the start: only a large, mostly unembedded table is worth a rebuild.
    """

    live: int
    remaining: int
    started: float = dataclasses.field(default_factory=time.monotonic)
    batches: int = 0
    rows: int = 0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0
    decided: bool | None = None
    reason: str = ""

    def add(self, rows: int, *, embed_seconds: float, write_seconds: float) -> None:
        self.batches += 1
        self.rows += rows
        self.embed_seconds += embed_seconds
        self.write_seconds += write_seconds

    @property
    def write_share(self) -> float:
        total = self.embed_seconds + self.write_seconds
        return self.write_seconds / total if total > 0 else 0.0

    def verdict(self, now: float | None = None) -> bool | None:
        if self.decided is not None:
            return None  # answered already
        elapsed = (now if now is not None else time.monotonic()) - self.started
        if self.batches < PROBE_BATCHES or elapsed < PROBE_SECONDS:
            return None
        left = self.remaining - self.rows
        share = self.write_share
        self.decided = bool(
            share >= WRITE_BOUND_SHARE
            and left >= REBUILD_MIN_ROWS
            and left > REBUILD_FRACTION * self.live
        )
        self.reason = (
            f"database writes took {share:.0%} of each batch's time over {self.batches} "
            f"batches ({self.rows / max(elapsed, 1e-9):.0f} clips/s); {left} clips left of "
            f"{self.live} live: " + ("drop the index, build it at the end" if self.decided
                                     else "keep the index")
        )  # fmt: skip
        return self.decided


async def index_exists(pool: AsyncConnectionPool, space: Space) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(space_table.INDEX_EXISTS, (space.index_name,))
        row = await cur.fetchone()
        return bool(row and row[0])


async def drop_index(pool: AsyncConnectionPool, space: Space) -> None:
    async with pool.connection() as conn:
        await conn.execute(space_table.drop_index(space.index_name))


#: pgvector's in-memory graph per row besides the vector: the element, its neighbour lists
#: (2m at layer 0, m above, 16 bytes each at m = 16) and allocation overhead, rounded up.
GRAPH_BYTES_PER_ROW = 700
BYTES_PER_DIMENSION = {"halfvec": 2, "vector": 4}


def graph_bytes(rows: int, dimensions: int, storage: str) -> int:
    """Memory an HNSW build needs to keep the whole graph in memory (its fast path)."""
    per_row = 8 + dimensions * BYTES_PER_DIMENSION.get(storage, 4) + GRAPH_BYTES_PER_ROW
    return int(rows * per_row * 1.1)


def build_memory_mb(*, needed: int, server: int, cap_mb: int) -> int:
    """What the graph needs, up to ``cap_mb``, never below the server's maintenance_work_mem
    (a DBA who gave maintenance 8 GB is not overruled by a smaller default), at least 64 MB."""
    mb = 2**20
    return max(64, -(-server // mb), min(-(-needed // mb), cap_mb))


#: The build's backend runs at this nice value where the database runs on this machine and we
#: may renice it (clipembed.db.priority). In the 100,000-clip migration the build (one
#: `CREATE INDEX`, which no pace can slow) was when search failed: 181 of 206 failures in its
#: 131 s (docs/benchmarks.md).
BUILD_NICE = priority.BUILD_NICE
lower_priority = priority.lower_priority
renice = priority.renice


#: The build's parallel workers are processes of their own, started once the statement runs:
#: while it runs, they are looked for this often and reniced too.
WORKER_POLL_SECONDS = 0.5
#: The parallel workers of a backend (``%s``: its pid).
PARALLEL_WORKERS = "SELECT pid FROM pg_stat_activity WHERE leader_pid = %s"


async def renice_workers(url: str, leader: int, nice: int = BUILD_NICE) -> None:
    """Until cancelled: renice the parallel workers of ``leader`` as they appear."""
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        while True:
            cur = await conn.execute(PARALLEL_WORKERS, (leader,))
            for (pid,) in await cur.fetchall():
                renice(int(pid), nice)
            await asyncio.sleep(WORKER_POLL_SECONDS)


async def rebuild_index(
    pool: AsyncConnectionPool, space: Space, *, workers: int = 2, memory_mb: int = 1024
) -> None:
    """Build a space's HNSW index with the memory its graph needs (up to ``memory_mb``,
    CLIPEMBED_INDEX_BUILD_MEMORY_MB) and ``workers`` parallel workers
    (CLIPEMBED_INDEX_BUILD_WORKERS: 0 leaves the cores to search), on a connection of its own
    whose backend runs at :data:`BUILD_NICE` where it can (:func:`lower_priority`); the
    connection closes with the build, so no pooled backend keeps the low priority.

    A graph that does not fit is built on disk, several times slower (a 1,000,000-row halfvec(768)
    graph needs ~2.4 GB: docs/benchmarks.md, "A million clips"); the log says so beforehand.
    """
    url = pool.conninfo
    if not isinstance(url, str):  # our pools are opened with a URL (db.connection.open_pool)
        raise TypeError("the pool has no connection string to open the build's connection with")
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        cur = await conn.execute(space_table.count_rows(space.table_name))
        rows = int((await cur.fetchone() or (0,))[0])
        cur = await conn.execute(space_table.MAINTENANCE_MEMORY)
        server = int((await cur.fetchone() or (0,))[0])
        needed = graph_bytes(rows, space.dimensions, space.storage)
        memory = build_memory_mb(needed=needed, server=server, cap_mb=memory_mb)
        if needed > memory * 2**20:
            logger.warning(
                "the HNSW graph will not fit in the build's memory: it builds on disk, slower; "
                "raise CLIPEMBED_INDEX_BUILD_MEMORY_MB if the server has the memory",
                extra={"rows": rows, "needed_mb": needed // 2**20, "memory_mb": memory},
            )
        niced = lower_priority(conn.info)
        logger.info(
            "building the HNSW index",
            extra={
                "rows": rows,
                "memory_mb": memory,
                "workers": workers,
                "nice": BUILD_NICE if niced else 0,
            },
        )
        for setting in space_table.index_build_settings(workers, memory):
            # a server that refuses a setting still builds the index, only slower
            with contextlib.suppress(psycopg.Error):
                await conn.execute(setting)
        await conn.execute(connection.NO_STATEMENT_TIMEOUT)  # a build takes what it takes
        watcher = None
        if niced and workers > 0:
            watcher = asyncio.create_task(renice_workers(url, conn.info.backend_pid))
        try:
            await conn.execute(
                space_table.create_index(space.table_name, space.index_name, space.storage)
            )
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
