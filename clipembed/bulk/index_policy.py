"""Whether a backfill drops the space's index and builds it once at the end, and the build itself.

An IVFFlat index (CLIPEMBED_INDEX_KIND) is trained on the rows there at its build, so a large
load always builds it at the end, and a load that leaves the table four times larger than its
lists were chosen for rebuilds it (:func:`ivfflat_outgrown`). The rest is about HNSW:

When most of a large table is unembedded and the load runs faster than PostgreSQL can maintain
the graph row by row, building the index once after loading is several times faster
(docs/benchmarks.md). Whether it does is *measured*, not assumed: a load whose request limit
already exceeds INCREMENTAL_INDEX_RATE drops the index at the start; any other ``auto`` load
starts with the index kept and a :class:`Probe` watches it: from the clips/s the database
absorbs with the index kept, the share of each batch spent writing and the request limit's
ceiling, it estimates the time until every clip is searchable both ways, and drops the index
(to build it once at the end) only when that is sooner. At 100,000 clips and the default limit
it dropped the index at its 27th estimate: 324 s to searchable, against 434 s with the index
kept and 469 s under the first policy, which decided once, from the first batches, on a fixed
share of write time (docs/benchmarks.md).

The ceiling counts requests per minute and ``--max-rate``, not tokens per minute: where long
texts make the token limit bind first, the estimate of the load without the index is high,
and the policy drops the index somewhat more readily than it should.
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
    from clipembed.settings import Settings
    from clipembed.spaces import Space

logger = logging.getLogger(__name__)

IndexMode = Literal["auto", "keep", "rebuild"]
INDEX_MODES: tuple[str, ...] = ("auto", "keep", "rebuild")

REBUILD_MIN_ROWS = 1_000  # below this the index is cheap either way; keep it for live search
REBUILD_FRACTION = 0.5  # rebuild when more than this fraction of live clips needs embedding
#: Above this many clips/s allowed by the request limit, index maintenance would slow the load.
INCREMENTAL_INDEX_RATE = 1000.0
#: The probe's window: at least this many batches and seconds of the load with the index kept.
PROBE_BATCHES = 6
PROBE_SECONDS = 3.0


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


def ceiling(
    service: EmbeddingService, requests_per_minute: int, batch_size: int, max_rate: float | None
) -> float | None:
    """Clips/s the request limit (and ``--max-rate``, when set) allows this load, or None."""
    per_request = min(batch_size, service.provider.max_inputs_per_request)
    rates = [requests_per_minute / 60 * per_request] if requests_per_minute > 0 else []
    if max_rate:
        rates.append(float(max_rate))
    return min(rates) if rates else None


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


#: An HNSW build adds about this many rows x dimensions per second (pgvector 0.8.5, two cores,
#: the graph in memory): 20,000 x 1,536 halfvec in 18.3 s (1.7 M/s), 1,000,000 x 768 in 236 s
#: (3.3 M/s) and, on a machine of half the speed, 426 s (1.8 M/s) (docs/benchmarks.md). The
#: lowest, rounded down, so that the estimate errs toward keeping the index live.
BUILD_DIMENSION_ROWS_PER_S = 1.5e6
#: The index is dropped only when that saves at least this share of the time left with it kept.
DROP_MARGIN = 0.1


def build_seconds(rows: int, dimensions: int) -> float:
    """About how long an HNSW build of ``rows`` vectors takes (BUILD_DIMENSION_ROWS_PER_S)."""
    return rows * dimensions / BUILD_DIMENSION_ROWS_PER_S


def to_searchable(
    *, left: int, live: int, dimensions: int, rate: float, write_share: float, ceiling: float | None
) -> tuple[float, float]:
    """Seconds until every clip is embedded and indexed: (index kept, index dropped now and built
    at the end), pure.

    Kept: ``left`` clips at the measured ``rate``. Dropped: the writes get cheap, so a batch
    takes about ``1 - write_share`` of its time, but never faster than the request limit allows
    (``ceiling`` clips/s, None: no limit); then the build of all ``live`` rows.
    """
    rate = max(rate, 1e-9)
    free = rate / max(1.0 - write_share, 0.05)
    if ceiling is not None:
        free = min(free, ceiling)
    free = max(free, rate)
    return left / rate, left / free + build_seconds(live, dimensions)


@dataclasses.dataclass
class Probe:
    """An ``auto`` load with the index kept: would dropping it make the clips searchable sooner?

    ``add`` each batch's rows, embed and write seconds as it completes. Every window (at least
    PROBE_BATCHES batches and PROBE_SECONDS) :meth:`verdict` estimates the time to searchable
    both ways from what the window measured (:func:`to_searchable`: the clips/s the database
    absorbs with the index kept against the request limit's ceiling) and answers ``True`` (drop
    it now, build it at the end: the estimate saves DROP_MARGIN or more), ``False`` (keep it;
    the next window is watched, since graph inserts get slower as the graph grows) or ``None``
    (no window complete, or watching is over). Rows are counted from a window's first completed
    batch, so the start-up of the load is not taken for a slow database.
    """

    live: int
    remaining: int
    dimensions: int
    #: clips/s the request limit allows (None: no limit)
    ceiling: float | None = None
    first_at: float | None = None
    batches: int = 0
    rows: int = 0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0
    #: rows of the windows before this one, and of this one's first batch
    done: int = 0
    windows: int = 0
    #: True: dropped; False: watching ended with the index kept
    decided: bool | None = None
    reason: str = ""

    def add(
        self, rows: int, *, embed_seconds: float, write_seconds: float, at: float | None = None
    ) -> None:
        now = time.monotonic() if at is None else at
        if self.first_at is None:  # the window starts here: these rows finished before it
            self.first_at = now
            self.done += rows
            return
        self.batches += 1
        self.rows += rows
        self.embed_seconds += embed_seconds
        self.write_seconds += write_seconds

    @property
    def write_share(self) -> float:
        total = self.embed_seconds + self.write_seconds
        return self.write_seconds / total if total > 0 else 0.0

    def verdict(self, now: float | None = None) -> bool | None:
        if self.decided is not None or self.first_at is None:
            return None
        now = time.monotonic() if now is None else now
        elapsed = now - self.first_at
        if self.batches < PROBE_BATCHES or elapsed < PROBE_SECONDS:
            return None
        rate = self.rows / max(elapsed, 1e-9)
        share = self.write_share
        self.done += self.rows
        self.windows += 1
        left = max(self.remaining - self.done, 0)
        kept, dropped = to_searchable(
            left=left, live=self.live, dimensions=self.dimensions, rate=rate,
            write_share=share, ceiling=self.ceiling,
        )  # fmt: skip
        drop = left >= REBUILD_MIN_ROWS and dropped <= kept * (1 - DROP_MARGIN)
        limit = f" (the limit allows {self.ceiling:.0f})" if self.ceiling is not None else ""
        self.reason = (
            f"estimate {self.windows}: "
            f"{rate:.0f} clips/s with the index kept{limit}, {share:.0%} of each batch writing; "
            f"{left} clips left: about {kept:.0f} s to searchable with the index kept, "
            f"{dropped:.0f} s with it dropped and built at the end: "
            + ("drop the index, build it at the end" if drop else "keep the index")
        )
        self.first_at, self.batches, self.rows = now, 0, 0
        self.embed_seconds = self.write_seconds = 0.0
        if drop:
            self.decided = True
        elif left < REBUILD_MIN_ROWS:
            self.decided = False  # too little left for a rebuild ever to pay: stop watching
        return drop


def index_build(cfg: Settings) -> space_table.IndexBuild:
    """The index the settings ask for (CLIPEMBED_INDEX_KIND, CLIPEMBED_HNSW_M,
    _EF_CONSTRUCTION, CLIPEMBED_IVFFLAT_LISTS)."""
    return space_table.IndexBuild(
        kind=cfg.clipembed_index_kind,
        m=cfg.clipembed_hnsw_m,
        ef_construction=cfg.clipembed_hnsw_ef_construction,
        lists=cfg.clipembed_ivfflat_lists,
    )


async def index_exists(pool: AsyncConnectionPool, space: Space) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(space_table.INDEX_EXISTS, (space.index_name,))
        row = await cur.fetchone()
        return bool(row and row[0])


async def ivfflat_outgrown(pool: AsyncConnectionPool, space: Space) -> bool:
    """Is the space's index an IVFFlat one whose table has outgrown its lists
    (:func:`space_table.ivfflat_stale`: each query would scan four times the rows it was built
    to, through centroids trained on a quarter of the data)?"""
    async with pool.connection() as conn:
        cur = await conn.execute(space_table.INDEX_KIND, (space.index_name,))
        row = await cur.fetchone()
        if row is None or row[0] != "ivfflat":
            return False
        lists = space_table.index_option(row[1], "lists", space_table.IVFFLAT_DEFAULT_LISTS)
        cur = await conn.execute(space_table.count_rows(space.table_name))
        rows = int((await cur.fetchone() or (0,))[0])
    return space_table.ivfflat_stale(lists, rows)


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


def ivfflat_sample_bytes(rows: int, dimensions: int, lists: int = 0) -> int:
    """Memory an IVFFlat build's k-means takes: pgvector samples 50 rows a list (float32)."""
    lists = lists or space_table.ivfflat_lists(rows)
    return min(rows, 50 * lists) * dimensions * 4 + lists * dimensions * 4


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
    pool: AsyncConnectionPool,
    space: Space,
    *,
    workers: int = 2,
    memory_mb: int = 1024,
    build: space_table.IndexBuild = space_table.DEFAULT_BUILD,
) -> None:
    """Build a space's index, replacing one still there (``build``: HNSW, or IVFFlat with lists
    for the rows there now) with the memory it needs (up to ``memory_mb``,
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
        build = build.for_rows(rows)  # ``auto``: by the rows there now
        cur = await conn.execute(space_table.MAINTENANCE_MEMORY)
        server = int((await cur.fetchone() or (0,))[0])
        if build.kind == "ivfflat":  # its lists, for the rows there now, once
            build = dataclasses.replace(build, lists=build.lists or space_table.ivfflat_lists(rows))
            needed = ivfflat_sample_bytes(rows, space.dimensions, build.lists)
        else:
            needed = graph_bytes(rows, space.dimensions, space.storage)
        memory = build_memory_mb(needed=needed, server=server, cap_mb=memory_mb)
        if build.kind == "hnsw" and needed > memory * 2**20:
            logger.warning(
                "the HNSW graph will not fit in the build's memory: it builds on disk, slower; "
                "raise CLIPEMBED_INDEX_BUILD_MEMORY_MB if the server has the memory",
                extra={"rows": rows, "needed_mb": needed // 2**20, "memory_mb": memory},
            )
        niced = lower_priority(conn.info)
        logger.info(
            f"building the {'IVFFlat' if build.kind == 'ivfflat' else 'HNSW'} index",
            extra={
                "rows": rows,
                **(
                    {"lists": build.lists}
                    if build.kind == "ivfflat"
                    else {"m": build.m, "ef_construction": build.ef_construction}
                ),
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
            # the old index, where a caller kept it (a load with nothing to embed, an outgrown
            # IVFFlat index), goes only now: search keeps it until the build starts
            await conn.execute(space_table.drop_index(space.index_name))
            await conn.execute(
                space_table.create_index(
                    space.table_name, space.index_name, space.storage, build, rows
                )
            )
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
