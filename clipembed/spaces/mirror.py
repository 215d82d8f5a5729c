"""The specification's columns on ``clips`` as a mirror of the active space.

Consumers of the original schema read ``clips.embedding``, ``embedding_model`` and
``embedding_generated_at``. They keep working: a statement trigger on every space table copies
the active space's writes into those columns (migration 0009), wherever the active space's
dimensions equal the column's; otherwise the columns are NULL and ``active_embeddings`` is the
place to read. After a promote or a rollback the columns hold the previous space's vectors until
:func:`sync` has copied the new one over, page by page (each row's ``embedding_model`` always
names the model that made its vector, so a reader is never misled about a row). ``sync`` is
idempotent and resumable: ``clipembed model sync`` runs it again after an interruption.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from clipembed.spaces import registry
from clipembed.store import clip_table

PAGE = 5000


@dataclasses.dataclass
class SyncReport:
    space: str
    fits: bool
    scanned_pages: int = 0
    changed: int = 0
    seconds: float = 0.0


async def column_dimensions(pool: AsyncConnectionPool) -> int | None:
    async with pool.connection() as conn:
        cur = await conn.execute(clip_table.CLIP_COLUMN_DIMENSIONS)
        row = await cur.fetchone()
        return int(row[0]) if row else None


async def sync(
    pool: AsyncConnectionPool,
    *,
    page: int = PAGE,
    progress: Callable[[int], None] | None = None,
    before_page: Callable[[int], Awaitable[None]] | None = None,
) -> SyncReport:
    """Bring the clips columns in line with the active space (one short transaction per page).

    The active space is read at each page: a promote during a sync makes the rest of the pages
    follow the new one (and the next sync finishes the pages already passed).
    ``before_page(rows)`` is awaited before each page: the caller's pace (a sync rewrites every
    clip row, bulk work like a backfill; the CLI gives it the backfill's pace).
    """
    started = time.monotonic()
    dims = await column_dimensions(pool)
    last: Any = clip_table.FIRST_ID
    report: SyncReport | None = None
    while True:
        if before_page is not None:
            await before_page(page)
        async with pool.connection() as conn:
            space = await registry.active(conn)
            fits = dims == space.dimensions
            if report is None:
                report = SyncReport(space.name, fits)
            stmt = (
                clip_table.mirror_page(space.table_name) if fits else clip_table.MIRROR_CLEAR_PAGE
            )
            cur = await conn.execute(stmt, (last, page))
            row = await cur.fetchone()
            await conn.commit()
        if row is None or row[0] is None:
            break
        last, changed = row[0], int(row[1])
        report.scanned_pages += 1
        report.changed += changed
        if progress is not None:
            progress(changed)
    assert report is not None
    report.seconds = time.monotonic() - started
    return report
