"""The one embedding pipeline: read pending clips by key → embed through the service → apply.

Backfill, the scheduler and the reconciliation sweep all use these three steps, so the
staleness rule, the content-hash guard and the failure accounting exist once:

- :func:`scan` pages live clips by primary key (keyset, never OFFSET: the original's OFFSET over
  ``embedding IS NULL`` skipped rows as it filled them) and yields those that need embedding;
- :func:`embed_and_write` embeds one batch through the service (cache, limits, retries,
  poison isolation) and stores the good vectors with :func:`write_batch`;
- :func:`write_batch` COPYs vectors in binary into a temporary table and upserts them into
  the space's table in one statement, only where the clip's text is still what was embedded: a
  clip edited meanwhile keeps its (queued) re-embedding instead of receiving a stale vector.

Every step works on one embedding space (:class:`clipembed.spaces.Space`): its table, and the
model and dimensions of the service that embeds into it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from clipembed import clips
from clipembed.status import rollups
from clipembed.store import clip_table, space_registry, space_table

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbeddingService
    from clipembed.spaces import Space

logger = logging.getLogger(__name__)

PAGE = 2000  # rows per keyset page


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A clip to embed, with the values its text was built from (to detect concurrent edits)."""

    id: Any
    text: str
    content_hash: bytes
    title: str
    broadcaster_name: str
    creator_name: str | None
    game_name: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any], *, model: str, dimensions: int) -> Pending:
        text = clips.embedding_text(clips.ClipText.from_row(row))
        return cls(
            row["id"],
            text,
            clips.content_hash(text, model, dimensions),
            row["title"],
            row["broadcaster_name"],
            row["creator_name"],
            row["game_name"],
        )


@dataclasses.dataclass
class ScanCounts:
    """What a scan saw: every live clip read, and those that needed nothing."""

    total: int = 0
    skipped: int = 0


@dataclasses.dataclass
class BatchOutcome:
    written: int = 0
    superseded: int = 0  # embedded, but the clip was edited meanwhile: left for the next run
    failed: int = 0
    last_error: str | None = None
    embed_seconds: float = 0.0  # the provider call, limiter waits included
    write_seconds: float = 0.0  # the database write, pool wait included (the index policy's probe)


def needs_embedding(row: dict[str, Any], *, content_hash: bytes, force: bool) -> bool:
    """The staleness rule: no vector, or another hash of (model, dimensions, text)."""
    if force or row["missing"]:
        return True
    stored = row["embedding_content_hash"]
    return stored is None or bytes(stored) != content_hash


async def scan(
    pool: AsyncConnectionPool,
    *,
    space: Space,
    model: str,
    dimensions: int,
    force: bool = False,
    counts: ScanCounts | None = None,
    stop: asyncio.Event | None = None,
    page: int = PAGE,
) -> AsyncIterator[Pending]:
    """Every live clip that needs embedding in ``space``, by keyset pages; counts the rest."""
    counts = counts if counts is not None else ScanCounts()
    last: Any = clip_table.FIRST_ID
    stmt = space_table.backfill_page(space.table_name)
    while stop is None or not stop.is_set():
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(stmt, (last, space.id, page))
            rows = await cur.fetchall()
        if not rows:
            return
        for row in rows:
            counts.total += 1
            item = Pending.from_row(row, model=model, dimensions=dimensions)
            if needs_embedding(row, content_hash=item.content_hash, force=force):
                yield item
            else:
                counts.skipped += 1
        last = rows[-1]["id"]


async def write_batch(
    pool: AsyncConnectionPool,
    items: Sequence[Pending],
    vectors: Sequence[np.ndarray],
    *,
    space: Space,
    model: str,
    dimensions: int,
    force: bool = False,
) -> int:
    """Store vectors in a space in one transaction (binary COPY + upsert); returns rows written."""
    if not items:
        return 0
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(space_registry.SPACE_COUNT)
        count_row = await cur.fetchone()
        only_space = bool(count_row and int(count_row[0]) <= 1)
        await cur.execute(space_table.create_stage(dimensions))
        async with cur.copy(space_table.COPY_STAGE) as copy:
            copy.set_types(space_table.COPY_STAGE_TYPES)
            for item, vec in zip(items, vectors, strict=True):
                await copy.write_row(
                    (
                        item.id,
                        vec,
                        item.content_hash,
                        model,
                        item.title,
                        item.broadcaster_name,
                        item.creator_name,
                        item.game_name,
                    )
                )
        await cur.execute(
            space_table.apply_stage(space.table_name, space.storage, dimensions),
            {"force": force, "retire": only_space},
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def embed_and_write(
    service: EmbeddingService,
    pool: AsyncConnectionPool,
    batch: Sequence[Pending],
    *,
    space: Space,
    force: bool = False,
    source: str = "backfill",
) -> BatchOutcome:
    """Embed one batch and store what succeeded. Per-clip failures are counted and logged.

    The batch's figures go to this minute's rollup (``source``: backfill or scheduler), which
    the status page and ``clipembed status`` read.

    A database failure on write is counted against the batch's clips (they stay for the next
    run) rather than raised: one bad write must not end a backfill of millions.
    """
    outcome = BatchOutcome()
    started = time.monotonic()
    result = await service.embed_detailed([p.text for p in batch])
    outcome.embed_seconds = time.monotonic() - started
    good = [(p, v) for p, v in zip(batch, result.vectors, strict=True) if v is not None]
    for p, err in zip(batch, result.errors, strict=True):
        if err is not None:
            outcome.failed += 1
            outcome.last_error = str(err)
            logger.warning("clip failed", extra={"clip": str(p.id), "reason": str(err)})
    try:
        written = await write_batch(
            pool,
            [p for p, _ in good],
            [v for _, v in good],
            space=space,
            model=service.model,
            dimensions=service.dimensions,
            force=force,
        )
    except Exception as exc:  # the database failed: these clips stay for the next run
        outcome.failed += len(good)
        outcome.last_error = f"database write failed: {exc}"
        logger.error("batch write failed", extra={"clips": len(good), "reason": str(exc)})
        written = 0
    outcome.write_seconds = time.monotonic() - started - outcome.embed_seconds
    outcome.written = written
    outcome.superseded = len(good) - written
    await rollups.record(
        pool,
        model=service.model,
        source=source,
        clips=written,
        failed=outcome.failed,
        stats=result.stats,
        price_per_million=service.settings.price_per_million_tokens,
    )
    return outcome
