"""``clipembed backfill``: embed every live clip whose embedding is missing or stale.

Pipeline (memory stays flat whatever the table size)::

    reader ──pages by id──▶ needs-embedding filter ──batches──▶ N embed tasks ──▶ writer (binary COPY)

- The reader pages by primary key (keyset), never OFFSET: the original's OFFSET over
  ``embedding IS NULL`` skipped rows as it filled them.
- A clip needs embedding when it has none, or its ``embedding_model`` or
  ``embedding_content_hash`` differs from what its current text and the configuration give
  (``--force``: always). The hash is computed here, in Python, with the same function every
  writer uses; the others are counted as Skipped.
- Batches go through the embedding service (cache, limits, retries) ``--concurrency`` at a
  time; the queue between reader and embedders is bounded, so the reader never runs ahead.
- The writer COPYs each batch's vectors in binary into a temporary table and updates ``clips``
  from it in one statement, only where the clip's text is still what was embedded: a clip edited
  meanwhile keeps its (queued) re-embedding instead of receiving a stale vector.
- Stopping (Ctrl-C, SIGTERM) stops the reader; batches in flight finish and are written; the
  summary is printed. Nothing is held in a transaction across a provider call, so the next run
  simply finds what is left.
- When most of a large table is unembedded, building the HNSW index once after loading is much
  faster than maintaining it row by row (docs/benchmarks.md): ``--index auto`` drops it first
  and always rebuilds it at the end, even after an interruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import AsyncConnectionPool

from clipembed import clips
from clipembed.db import queries
from clipembed.jobs import progress as progress_mod
from clipembed.runtime import Runtime

logger = logging.getLogger(__name__)

PAGE = 2000  # rows per keyset page
REBUILD_MIN_ROWS = 1_000  # below this the index is cheap either way; keep it for live search
REBUILD_FRACTION = 0.5  # rebuild when more than this fraction of live clips needs embedding
#: Above this many clips/s allowed by the request limit, index maintenance would slow the load;
#: below it the database keeps up with the provider, and maintaining the index while waiting
#: for the limit is free (measured in docs/benchmarks.md).
INCREMENTAL_INDEX_RATE = 1000.0


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


@dataclasses.dataclass
class Summary:
    """What a run did; printed as the original's summary, or as JSON."""

    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    duration: float = 0.0
    last_error: str | None = None
    requests: int = 0
    tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    retries: int = 0
    rate_limited: int = 0
    estimated_cost_usd: float = 0.0
    interrupted: bool = False
    dry_run: bool = False
    would_embed: int = 0
    estimated_seconds: float | None = None
    index_rebuilt: bool = False
    superseded: int = 0  # embedded, but the clip was edited meanwhile: left for the next run

    @property
    def average_ms(self) -> float:
        return self.duration * 1000 / self.processed if self.processed else 0.0

    @property
    def cache_hit_rate(self) -> float:
        looked = self.cache_hits + self.cache_misses
        return self.cache_hits / looked if looked else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["average_ms_per_clip"] = round(self.average_ms, 3)
        out["cache_hit_rate"] = round(self.cache_hit_rate, 4)
        out["duration"] = round(self.duration, 3)
        out["estimated_cost_usd"] = round(self.estimated_cost_usd, 6)
        return out

    def lines(self) -> list[str]:
        if self.dry_run:
            eta = "n/a" if self.estimated_seconds is None else _duration(self.estimated_seconds)
            return [
                "Backfill dry run (nothing sent, nothing written)",
                f"  Total:            {self.total}",
                f"  Would embed:      {self.would_embed}",
                f"  Skipped:          {self.skipped}",
                f"  Already cached:   {self.cache_hits}",
                f"  API requests:     {self.requests}",
                f"  Tokens:           {self.tokens}",
                f"  Estimated cost:   ${self.estimated_cost_usd:.4f}",
                f"  Estimated time:   {eta} at the configured rate limits",
            ]
        return [
            "Backfill " + ("interrupted" if self.interrupted else "complete"),
            f"  Total:            {self.total}",
            f"  Processed:        {self.processed}",
            f"  Skipped:          {self.skipped}",
            f"  Failed:           {self.failed}",
            f"  Duration:         {_duration(self.duration)}",
            f"  Average per clip: {self.average_ms:.2f} ms",
            f"  Last error:       {self.last_error or '-'}",
            f"  API requests:     {self.requests}",
            f"  Tokens:           {self.tokens}",
            f"  Cache hit rate:   {self.cache_hit_rate:.1%}",
            f"  Estimated cost:   ${self.estimated_cost_usd:.4f}",
        ]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{int(hours)}h{int(minutes):02d}m{secs:04.1f}s"
        if hours
        else f"{int(minutes)}m{secs:04.1f}s"
    )


def needs_embedding(row: dict[str, Any], *, model: str, content_hash: bytes, force: bool) -> bool:
    """The staleness rule: no vector, another model, or another text/dimension hash."""
    if force or row["missing"]:
        return True
    if row["embedding_model"] != model:
        return True
    stored = row["embedding_content_hash"]
    return stored is None or bytes(stored) != content_hash


async def scan(
    pool: AsyncConnectionPool,
    *,
    model: str,
    dimensions: int,
    force: bool,
    summary: Summary,
    stop: asyncio.Event,
    page: int = PAGE,
) -> AsyncIterator[Pending]:
    """Every live clip that needs embedding, by keyset pages; counts the rest as skipped."""
    from psycopg.rows import dict_row

    last: Any = queries.FIRST_ID
    while not stop.is_set():
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries.BACKFILL_PAGE, (last, page))
            rows = await cur.fetchall()
        if not rows:
            return
        for row in rows:
            summary.total += 1
            text = clips.embedding_text(clips.ClipText.from_row(row))
            digest = clips.content_hash(text, model, dimensions)
            if needs_embedding(row, model=model, content_hash=digest, force=force):
                yield Pending(
                    row["id"],
                    text,
                    digest,
                    row["title"],
                    row["broadcaster_name"],
                    row["creator_name"],
                    row["game_name"],
                )
            else:
                summary.skipped += 1
        last = rows[-1]["id"]


async def write_batch(
    pool: AsyncConnectionPool,
    items: list[Pending],
    vectors: list[np.ndarray],
    *,
    model: str,
    dimensions: int,
    force: bool = False,
) -> int:
    """Store vectors in one transaction (binary COPY + UPDATE FROM); returns rows updated."""
    if not items:
        return 0
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(queries.create_stage(dimensions))
        async with cur.copy(queries.COPY_STAGE) as copy:
            copy.set_types(queries.COPY_STAGE_TYPES)
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
        await cur.execute(queries.APPLY_STAGE, {"force": force})
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def _index_exists(pool: AsyncConnectionPool) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(queries.HNSW_EXISTS, (queries.HNSW_INDEX,))
        row = await cur.fetchone()
        return bool(row and row[0])


async def rebuild_index(pool: AsyncConnectionPool) -> None:
    """Build the HNSW index with enough memory and parallel workers to do it in one pass."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            for setting in queries.INDEX_BUILD_SETTINGS:
                # a server that refuses a setting still builds the index, only slower
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(setting)
            await conn.execute(queries.CREATE_HNSW)
        finally:
            await conn.set_autocommit(False)


async def run(
    runtime: Runtime,
    *,
    batch_size: int = 50,
    force: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
    concurrency: int = 4,
    index: str = "auto",
    stop: asyncio.Event | None = None,
    progress: progress_mod.Progress | None = None,
) -> Summary:
    """Run one backfill; returns its summary. ``stop`` ends it gracefully when set."""
    svc = runtime.require_service()
    cfg = runtime.settings
    model, dims = svc.model, svc.dimensions
    stop = stop or asyncio.Event()
    summary = Summary(dry_run=dry_run)
    started = time.monotonic()
    pool = runtime.pool
    before = dataclasses.replace(svc.stats)

    async with pool.connection() as conn:
        cur = await conn.execute(queries.BACKFILL_COUNT)
        live, missing = await cur.fetchone() or (0, 0)
    expected = live if force else missing  # a lower bound for the progress bar (stale ones add)
    if limit is not None:
        expected = min(expected, limit)
    if progress is not None:
        progress.start(total=expected)

    if dry_run:
        try:
            return await _dry_run(
                runtime,
                summary,
                force=force,
                limit=limit,
                batch_size=batch_size,
                stop=stop,
                started=started,
            )
        finally:
            if progress is not None:
                progress.stop()

    rebuild = False
    if index == "rebuild" or (
        index == "auto"
        and live >= REBUILD_MIN_ROWS
        and expected > REBUILD_FRACTION * live
        and _cpu_bound(svc, cfg, batch_size)
    ):
        rebuild = await _index_exists(pool) or index == "rebuild"
        if rebuild:
            logger.info(
                "dropping the HNSW index to rebuild it after loading",
                extra={"live": live, "to_embed": expected},
            )
            async with pool.connection() as conn:
                await conn.execute(queries.DROP_HNSW)

    queue: asyncio.Queue[list[Pending] | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def produce() -> None:
        batch: list[Pending] = []
        taken = 0
        try:
            async for item in scan(
                pool, model=model, dimensions=dims, force=force, summary=summary, stop=stop
            ):
                if (limit is not None and taken >= limit) or stop.is_set():
                    break
                batch.append(item)
                taken += 1
                if len(batch) >= batch_size:
                    await queue.put(batch)
                    batch = []
            if batch and not stop.is_set():
                await queue.put(batch)
        finally:
            for _ in range(concurrency):
                await queue.put(None)

    async def consume() -> None:
        while True:
            batch = await queue.get()
            if batch is None:
                return
            outcome = await svc.embed_detailed([p.text for p in batch])
            good = [(p, v) for p, v in zip(batch, outcome.vectors, strict=True) if v is not None]
            for p, err in zip(batch, outcome.errors, strict=True):
                if err is not None:
                    summary.failed += 1
                    summary.last_error = str(err)
                    logger.warning("clip failed", extra={"clip": str(p.id), "reason": str(err)})
            try:
                written = await write_batch(
                    pool,
                    [p for p, _ in good],
                    [v for _, v in good],
                    model=model,
                    dimensions=dims,
                    force=force,
                )
            except Exception as exc:  # the database failed: these clips stay for the next run
                summary.failed += len(good)
                summary.last_error = f"database write failed: {exc}"
                logger.error("batch write failed", extra={"clips": len(good), "reason": str(exc)})
                written = 0
            summary.processed += written
            summary.superseded += len(good) - written
            if progress is not None:
                progress.advance(len(batch), processed=summary.processed, failed=summary.failed)

    try:
        await asyncio.gather(produce(), *(consume() for _ in range(concurrency)))
    finally:
        if rebuild:
            t = time.monotonic()
            logger.info("building the HNSW index")
            await rebuild_index(pool)
            summary.index_rebuilt = True
            logger.info("HNSW index built", extra={"seconds": round(time.monotonic() - t, 1)})
        if progress is not None:
            progress.stop()

    summary.interrupted = stop.is_set()
    summary.duration = time.monotonic() - started
    _fill_service_stats(summary, before, svc.stats, cfg.price_per_million_tokens)
    return summary


def _cpu_bound(svc: Any, cfg: Any, batch_size: int) -> bool:
    """Will this load go faster than the database can maintain the index incrementally?

    A local model competes with PostgreSQL for the same cores; a remote provider is bound by
    its request limit, and below INCREMENTAL_INDEX_RATE clips/s the index keeps up for free.
    """
    if not getattr(svc.provider, "parallel_requests", True):
        return True
    per_request = min(batch_size, svc.provider.max_inputs_per_request)
    return bool(cfg.embedding_requests_per_minute / 60 * per_request >= INCREMENTAL_INDEX_RATE)


def _fill_service_stats(summary: Summary, before: Any, after: Any, price: float) -> None:
    summary.requests = after.requests - before.requests
    summary.tokens = after.tokens - before.tokens
    summary.cache_hits = after.cache_hits - before.cache_hits
    summary.cache_misses = after.cache_misses - before.cache_misses
    summary.retries = after.retries - before.retries
    summary.rate_limited = after.rate_limited - before.rate_limited
    summary.estimated_cost_usd = summary.tokens * price / 1_000_000


async def _dry_run(
    runtime: Runtime,
    summary: Summary,
    *,
    force: bool,
    limit: int | None,
    batch_size: int,
    stop: asyncio.Event,
    started: float,
) -> Summary:
    """Estimate without sending or writing: clips, tokens, requests, cost and time.

    Clips are grouped as the real run groups them; texts already in the cache cost nothing (a
    read-only cache lookup is not a provider call); each group's misses are split into requests
    by the provider's input and token caps, as the service would.
    """
    svc = runtime.require_service()
    cfg = runtime.settings
    provider = svc.provider
    count = 0
    requests = 0
    batch: list[Pending] = []

    async def estimate(items: list[Pending]) -> int:
        prepared = list(dict.fromkeys(svc.prepare(p.text) for p in items))
        found: list[Any] = [None] * len(prepared)
        if svc.cache is not None:
            found = await svc.cache.get_many(prepared)
        misses = [t for t, v in zip(prepared, found, strict=True) if v is None]
        summary.cache_hits += len(prepared) - len(misses)
        summary.cache_misses += len(misses)
        tokens = sum(svc.count_tokens(t) for t in misses)
        summary.tokens += tokens
        if not misses:
            return 0
        return max(
            math.ceil(len(misses) / max(1, provider.max_inputs_per_request)),
            math.ceil(tokens / max(1, provider.max_tokens_per_request)),
        )

    async for item in scan(
        runtime.pool,
        model=svc.model,
        dimensions=svc.dimensions,
        force=force,
        summary=summary,
        stop=stop,
    ):
        if limit is not None and count >= limit:
            break
        count += 1
        batch.append(item)
        if len(batch) >= batch_size:
            requests += await estimate(batch)
            batch = []
    if batch:
        requests += await estimate(batch)
    summary.would_embed = count
    summary.requests = requests
    summary.estimated_cost_usd = summary.tokens * cfg.price_per_million_tokens / 1_000_000
    if cfg.embedding_provider == "openai":
        minutes = max(
            requests / cfg.embedding_requests_per_minute,
            summary.tokens / cfg.embedding_tokens_per_minute,
        )
        summary.estimated_seconds = minutes * 60
    summary.duration = time.monotonic() - started
    return summary


def exit_code(summary: Summary) -> int:
    if summary.failed or summary.interrupted:
        return 1
    return 0
