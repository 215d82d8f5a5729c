"""``clipembed import --bulk``: a large file through a staging table, set-based, chunk by chunk.

The row path (:func:`clipembed.bulk.importer.import_file`) pays, per clip, a pipelined INSERT
and three row triggers (the search analysis, the postings with three dynamic statements, the
queue): ~600 clips/s on this machine. Here a chunk of CHUNK validated rows goes in one binary
COPY to a session's temporary table and then, in one transaction:

1. the stored state of the clips the chunk will change is read and row-locked (id order);
2. one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` writes the chunk (the search analysis,
   a BEFORE trigger, still runs per row; the postings and queue triggers return at once because
   the transaction sets ``clipembed.bulk``, migration 0012);
3. postings and document lengths of the clips whose analysis changed are rewritten set-based;
4. the queue gets the clips whose embedded text changed in one statement, one notification.

The result is the one the triggers would give (tests/integration/test_bulk_import.py compares
the two paths table by table). A chunk the database rejects (a value our validation let through)
is rolled back and loaded by the row path, so a bad line is still reported by number and every
good line still loads. Parsing the next chunk (JSON, validation) runs in a thread while the
database works on the current one: the two cores both work.

An adopted table (Clipper's) is the platform's: its own triggers and clipembed's sync trigger
run per row as for any writer; the bulk path there only replaces the per-row round trips with
the COPY and one upsert per chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from clipembed import source
from clipembed.bulk import importer
from clipembed.source import queries as source_queries
from clipembed.store import clip_table
from clipembed.store.queue_table import CHANNEL, ENQUEUE_WRITTEN, NOTIFY

logger = logging.getLogger(__name__)

#: Chunks loaded at once, each on its own connection (the set-based statements are one core
#: each; the file is parsed in a thread beside them). Two kept both cores of the benchmark
#: machine busy (docs/benchmarks.md, "Bulk import").
JOBS = 2
CHUNK = 20_000  # rows per transaction: large enough for set-based work, short enough to hold locks
#: ``--bulk auto`` takes the bulk path from this file size on (~5,000 clips uncompressed).
AUTO_MIN_BYTES = 2 * 2**20

Row = tuple[int, tuple[Any, ...]]  # (line number, the row in ``columns`` order)


def wants_bulk(choice: str, path: Path) -> bool:
    """``bulk``/``rows`` as asked; ``auto`` by the file's size on disk."""
    if choice != "auto":
        return choice == "bulk"
    return path.stat().st_size >= AUTO_MIN_BYTES


def chunks(
    records: Iterator[tuple[int, importer.ClipRecord]], columns: Sequence[str], size: int
) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for number, record in records:
        chunk.append((number, importer.row(record, columns)))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


async def import_file(
    conn: psycopg.AsyncConnection[Any],
    path: Path,
    *,
    target: source.Source | None = None,
    chunk_size: int = CHUNK,
    jobs: int = JOBS,
    connect: Connect | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> importer.ImportReport:
    """Load every good line of ``path`` in chunks; returns the counts and the bad lines.

    ``jobs`` > 1 (with ``connect`` to open the extra connections) loads that many chunks at
    once, each on its own connection: the database's set-based work is one core per statement.
    A chunk naming a clip that a chunk still loading also names waits for it, so the file's
    later line still wins. ``progress(bytes_read, loaded)``: as the file is read and after
    every chunk.
    """
    columns: Sequence[str] = importer.COLUMNS
    row_upsert: sql.Composed = importer.UPSERT
    table: sql.Composable | None = None
    if target is not None:
        row_upsert, columns = await importer.adopted_upsert(conn, target)
        table = source_queries.table(target)
    loader = _Loader(
        owned=target is None,
        columns=columns,
        row_upsert=row_upsert,
        upsert=clip_table.upsert_from_stage(columns, table=table, returning=target is None),
        report=importer.ImportReport(mode="bulk"),
    )
    connections = [conn]
    try:
        if connect is not None:
            connections += [await connect() for _ in range(max(jobs, 1) - 1)]
        for c in connections:
            await loader.prepare(c)
        await loader.run(path, connections, chunk_size, progress)
    finally:
        for extra in connections[1:]:
            await extra.close()
    return loader.report


@dataclasses.dataclass
class _Loader:
    owned: bool
    columns: Sequence[str]
    row_upsert: sql.Composed
    upsert: sql.Composed
    report: importer.ImportReport
    read: int = 0

    async def prepare(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute(clip_table.create_stage(self.columns))
            if self.owned:
                await conn.execute(clip_table.CREATE_BEFORE)
                await conn.execute(clip_table.CREATE_WRITTEN)

    async def run(
        self,
        path: Path,
        connections: list[psycopg.AsyncConnection[Any]],
        chunk_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        def position(done: int) -> None:
            self.read = done
            if progress is not None:
                progress(done, self.report.loaded)

        key = list(self.columns).index("twitch_clip_id")
        records = importer.read_records(path, self.report, position=position)
        parts = chunks(records, self.columns, chunk_size)
        idle = list(connections)
        loading: dict[asyncio.Task[None], set[str]] = {}

        async def settle_one() -> None:
            done, _ = await asyncio.wait(loading, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                del loading[task]
                task.result()  # a lost connection ends the import here
            if progress is not None:
                progress(self.read, self.report.loaded)

        async def load_on(conn: psycopg.AsyncConnection[Any], chunk: list[Row]) -> None:
            try:
                await self.load(conn, chunk)
            finally:
                idle.append(conn)

        try:
            # the next chunk is parsed in a thread while the database loads the current ones
            pending = asyncio.ensure_future(asyncio.to_thread(next, parts, None))
            while (chunk := await pending) is not None:
                pending = asyncio.ensure_future(asyncio.to_thread(next, parts, None))
                ids = {values[key] for _, values in chunk}
                while not idle or any(ids & other for other in loading.values()):
                    await settle_one()
                conn = idle.pop()
                loading[asyncio.ensure_future(load_on(conn, chunk))] = ids
            while loading:
                await settle_one()
        finally:
            for task in loading:
                task.cancel()

    async def load(self, conn: psycopg.AsyncConnection[Any], chunk: list[Row]) -> None:
        started = time.monotonic()
        try:
            queued = await _load_chunk(conn, chunk, self.columns, self.upsert, owned=self.owned)
            self.report.loaded += len(chunk)
        except importer.ROW_ERRORS as exc:
            logger.warning(
                "a chunk was rejected as a whole; loading it row by row",
                extra={"first_line": chunk[0][0], "error": importer.first_line(exc)},
            )
            await importer.upsert_rows(conn, self.row_upsert, chunk, self.report)
            queued = None
        logger.info(
            "bulk chunk loaded",
            extra={
                "rows": len(chunk),
                "queued": queued,
                "seconds": round(time.monotonic() - started, 2),
            },
        )


async def _load_chunk(
    conn: psycopg.AsyncConnection[Any],
    chunk: list[Row],
    columns: Sequence[str],
    upsert: sql.Composed,
    *,
    owned: bool,
) -> int | None:
    """One chunk in one transaction; the number of clips it queued (owned table)."""
    steps: dict[str, float] = {}
    mark = time.monotonic()

    async def step(name: str, statement: Any, params: Any = None) -> None:
        nonlocal mark
        await cur.execute(statement, params)
        now = time.monotonic()
        steps[name] = round(now - mark, 3)
        mark = now

    async with conn.transaction(), conn.cursor() as cur:
        if owned:
            await cur.execute(clip_table.BULK_ON)
        await cur.execute(clip_table.WORK_MEM)
        async with cur.copy(clip_table.copy_stage(columns)) as cp:
            cp.set_types(clip_table.stage_types(columns))
            for number, values in chunk:
                await cp.write_row((number, *values))
        await step("copy", clip_table.ANALYZE_STAGE)
        if not owned:
            await step("upsert", upsert)
            return None
        await step("lock", clip_table.READ_BEFORE)
        await step("upsert", upsert)
        await step("postings_delete", clip_table.DELETE_POSTINGS)
        await step("doclen", clip_table.UPSERT_DOCLEN)
        await step("postings", clip_table.INSERT_POSTINGS)
        await step("queue", ENQUEUE_WRITTEN)
        row = await cur.fetchone()
        queued = int(row[0]) if row else 0
        if queued:
            await cur.execute(NOTIFY, (CHANNEL,))
    logger.debug("bulk chunk steps", extra={"seconds": steps})
    return queued
