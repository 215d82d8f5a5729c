"""``clipembed backfill``: embed every live clip whose embedding is missing or stale.

Pipeline (memory stays flat whatever the table size)::

    reader ──pages by id──▶ needs-embedding filter ──batches──▶ N embed tasks ──▶ writer (binary COPY)

The steps are :mod:`clipembed.bulk.pipeline`'s (shared with the scheduler and the sweep); this
module runs them concurrently and owns the run's lifecycle:

- batches go through the embedding service ``concurrency`` at a time; the queue between reader
  and embedders is bounded, so the reader never runs ahead;
- the tasks run in one :class:`asyncio.TaskGroup`: if any of them raises, the others are
  cancelled and awaited before the error propagates, so nothing keeps writing behind a failed
  run, and the index rebuild (in ``finally``) starts only after every writer has stopped;
- stopping (Ctrl-C, SIGTERM) stops the reader; batches in flight finish and are written; the
  summary is printed. Nothing is held in a transaction across a provider call, so the next run
  simply finds what is left;
- the index policy (:mod:`clipembed.bulk.index_policy`) may drop the HNSW index first and
  always rebuilds it at the end, even after an interruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from clipembed import settings as settings_mod
from clipembed import spaces
from clipembed.bulk import adaptive_pace, estimate, index_policy, pacing, pipeline
from clipembed.bulk import progress as progress_mod
from clipembed.bulk.report import Summary, exit_code
from clipembed.db import connection
from clipembed.runtime import Runtime
from clipembed.source import adoption
from clipembed.status import rollups
from clipembed.store import batch_tables, space_table

__all__ = ["Summary", "effective_settings", "exit_code", "run"]

logger = logging.getLogger(__name__)


def effective_settings(
    cfg: settings_mod.Settings, *, batch_size: int | None, concurrency: int | None
) -> settings_mod.Settings:
    """The settings a backfill runs with: flags win over settings, and are never capped.

    ``--batch`` and ``--concurrency`` default to ``CLIPEMBED_BACKFILL_BATCH_SIZE`` and
    ``CLIPEMBED_BACKFILL_CONCURRENCY``; the service's own per-request and in-flight caps
    (``EMBEDDING_BATCH_SIZE``, ``EMBEDDING_MAX_CONCURRENCY``) are raised to them for this run, so
    ``--batch 200 --concurrency 16`` really sends 200 inputs per request with 16 in flight.
    """
    batch = batch_size or cfg.clipembed_backfill_batch_size
    width = concurrency or cfg.clipembed_backfill_concurrency
    return cfg.model_copy(
        update={
            "clipembed_backfill_batch_size": batch,
            "clipembed_backfill_concurrency": width,
            "embedding_batch_size": max(cfg.embedding_batch_size, batch),
            "embedding_max_concurrency": max(cfg.embedding_max_concurrency, width),
        }
    )


async def choose_via(runtime: Runtime, via: str, *, force: bool = False) -> str:
    """``--via auto``: the Batch API when more than EMBEDDING_BATCH_API_MIN_CLIPS clips wait
    (and the provider takes it), or when a batch is still open; else the embeddings endpoint."""
    if via != "auto":
        return via
    svc = runtime.require_service()
    space = runtime.require_space()
    if not svc.provider.capabilities.batch_api:
        return "sync"
    async with runtime.pool.connection() as conn:
        row = await (await conn.execute(batch_tables.OPEN_FOR_SPACE, (space.id,))).fetchone()
        if row and row[0]:
            return "batch"  # an open batch holds clips: resume it, never embed them twice
        cur = await conn.execute(space_table.backfill_count(space.table_name))
        live, missing = await cur.fetchone() or (0, 0)
    backlog = live if force else missing
    return "batch" if backlog > runtime.settings.embedding_batch_api_min_clips else "sync"


async def restore_mirror(runtime: Runtime, *, dry_run: bool = False) -> int:
    """An adopted table's embedding column brought back to clipembed's vectors where another
    writer emptied it (or, unless CLIPEMBED_FOREIGN_VECTORS=keep, replaced them): a copy from
    the shadow, no provider call. With ``dry_run``, how many it would copy (at most)."""
    space = runtime.require_space()
    conn = await connection.connect(runtime.database_url, autocommit=True)
    async with conn:
        adopted = await adoption.load(conn)
        if adopted is None or (await spaces.active(conn)).id != space.id:
            return 0
        if dry_run:
            foreign, missing = await adoption.mirror_state(conn, adopted)
            return missing + (foreign if adopted.mapping.foreign_vectors == "replace" else 0)
        return await adoption.restore_mirror(conn, adopted)


async def run(
    runtime: Runtime,
    *,
    batch_size: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
    concurrency: int | None = None,
    index: str = "auto",
    stop: asyncio.Event | None = None,
    progress: progress_mod.Progress | None = None,
    max_rate: float | None = None,
) -> Summary:
    """Run one backfill of the runtime's space; returns its summary. ``stop`` ends it gracefully."""
    svc = runtime.require_service()
    space = runtime.require_space()
    cfg = runtime.require_service().settings  # the space's model: its prices and limits
    batch_size = batch_size or cfg.clipembed_backfill_batch_size
    concurrency = concurrency or cfg.clipembed_backfill_concurrency
    stop = stop or asyncio.Event()
    summary = Summary(dry_run=dry_run, space=space.name)
    started = time.monotonic()
    pool = runtime.pool
    before = dataclasses.replace(svc.stats)

    async with pool.connection() as conn:
        cur = await conn.execute(space_table.backfill_count(space.table_name))
        live, missing = await cur.fetchone() or (0, 0)
        cur = await conn.execute(batch_tables.WAITING_IN_BATCHES, (space.id,))
        summary.in_open_batch = int((await cur.fetchone() or (0,))[0])
    expected = live if force else missing  # a lower bound for the progress bar (stale ones add)
    if limit is not None:
        expected = min(expected, limit)
    if progress is not None:
        progress.start(total=expected)

    if dry_run:
        try:
            return await estimate.dry_run(
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
    probe: index_policy.Probe | None = None
    build = index_policy.index_build(cfg)
    # an IVFFlat index's lists are trained on the rows there at its build (``auto``: IVFFlat
    # for a table of the live clips' size): a large load builds it after loading, whatever its
    # pace
    trained = build.trains_on(live)
    outpaces = trained or index_policy.load_outpaces_index(
        svc, cfg.embedding_requests_per_minute, batch_size
    )
    if index_policy.wants_rebuild(index, live=live, expected=expected, outpaces=outpaces):
        rebuild = index == "rebuild" or await index_policy.index_exists(pool, space)
        if rebuild:
            summary.index_policy = (
                "--index rebuild"
                if index == "rebuild"
                else "an IVFFlat index trains on the rows loaded"
                if trained
                else "the request limit outpaces the index"
            )
            if expected > 0:
                logger.info(
                    "dropping the index to build it after loading",
                    extra={"live": live, "to_embed": expected, "why": summary.index_policy},
                )
                await index_policy.drop_index(pool, space)
            # else nothing is missing: the old index serves search through the pass, and
            # rebuild_index replaces it only when the build starts
    elif index == "auto" and index_policy.wants_rebuild(
        index, live=live, expected=expected, outpaces=True
    ):
        # a large load the request limit alone would not make outpace the index: measure it
        probe = index_policy.Probe(
            live=live,
            remaining=expected,
            dimensions=space.dimensions,
            ceiling=index_policy.ceiling(
                svc,
                cfg.embedding_requests_per_minute,
                batch_size,
                cfg.clipembed_backfill_max_rate if max_rate is None else max_rate,
            ),
        )
        summary.index_policy = "kept (probing)"

    async def observe(outcome: pipeline.BatchOutcome, rows: int) -> None:
        nonlocal rebuild
        if probe is None:
            return
        probe.add(rows, embed_seconds=outcome.embed_seconds, write_seconds=outcome.write_seconds)
        verdict = probe.verdict()
        if verdict is None:
            return
        summary.index_policy = probe.reason
        if verdict or probe.windows == 1:  # the first estimate, and a drop; the rest at debug
            logger.info("index policy decided", extra={"decision": probe.reason})
        else:
            logger.debug("index policy decided", extra={"decision": probe.reason})
        if verdict and await index_policy.index_exists(pool, space):
            rebuild = True
            await index_policy.drop_index(pool, space)

    queue: asyncio.Queue[list[pipeline.Pending] | None] = asyncio.Queue(maxsize=concurrency * 2)
    counts = pipeline.ScanCounts()
    rate = cfg.clipembed_backfill_max_rate if max_rate is None else max_rate
    pacer = pacing.Pacer(rate, burst=batch_size)
    watch = contextlib.AsyncExitStack()  # closed in the finally below, after every task
    pace = await watch.enter_async_context(
        adaptive_pace.watching(
            pool, pacer, target_ms=cfg.clipembed_backfill_search_target_ms, by="backfill"
        )
    )

    async def produce() -> None:
        batch: list[pipeline.Pending] = []
        taken = 0
        async for item in pipeline.scan(
            pool,
            space=space,
            model=svc.model,
            dimensions=svc.dimensions,
            force=force,
            counts=counts,
            stop=stop,
        ):
            if (limit is not None and taken >= limit) or stop.is_set():
                break
            batch.append(item)
            taken += 1
            if len(batch) >= batch_size:
                await pace.take(len(batch))  # --max-rate, adaptive: room for search
                await queue.put(batch)
                batch = []
        if batch and not stop.is_set():
            await pace.take(len(batch))  # --max-rate, adaptive: room for search
            await queue.put(batch)
        for _ in range(concurrency):
            await queue.put(None)

    async def consume() -> None:
        me = asyncio.current_task()
        while (batch := await queue.get()) is not None:
            outcome = await pipeline.embed_and_write(svc, pool, batch, space=space, force=force)
            if me is not None and me.cancelling():
                # A cancellation (a sibling failed) was swallowed somewhere below (a client
                # library converting CancelledError while a request was in flight): honour it
                # here, or this task would wait for a batch the cancelled reader never sends.
                raise asyncio.CancelledError
            summary.processed += outcome.written
            await observe(outcome, len(batch))
            summary.superseded += outcome.superseded
            summary.failed += outcome.failed
            summary.last_error = outcome.last_error or summary.last_error
            if progress is not None:
                progress.advance(len(batch), processed=summary.processed, failed=summary.failed)

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(produce(), name="backfill-reader")
            for i in range(concurrency):
                tasks.create_task(consume(), name=f"backfill-embedder-{i}")
    except BaseExceptionGroup as group:
        # one task failed and its siblings were cancelled and awaited: surface the cause
        raise group.exceptions[0] from group
    finally:
        # every reader and writer has stopped here (the TaskGroup awaited them all)
        await watch.aclose()
        if rebuild:
            await _build(runtime, cfg, build, summary)
        if progress is not None:
            progress.stop()
    if (
        not rebuild
        and index != "keep"
        and not stop.is_set()
        and await index_policy.ivfflat_outgrown(pool, space)
    ):
        summary.index_policy = "the IVFFlat index was trained on far fewer rows"
        await _build(runtime, cfg, build, summary)

    summary.total, summary.skipped = counts.total, counts.skipped
    summary.paced_seconds = round(pacer.waited, 1)
    summary.pace_changes = len(pace.changes)
    summary.slowest_pace = round(pace.slowest, 1) if pace.slowest else None
    summary.interrupted = stop.is_set()
    summary.duration = time.monotonic() - started
    summary.fill_service_stats(before, svc.stats, cfg.price_per_million_tokens)
    return summary


async def _build(
    runtime: Runtime, cfg: settings_mod.Settings, build: space_table.IndexBuild, summary: Summary
) -> None:
    """Build the space's index after loading (a connection of its own, timed, recorded)."""
    t = time.monotonic()
    space = runtime.require_space()
    await index_policy.rebuild_index(
        runtime.pool,
        space,
        workers=cfg.clipembed_index_build_workers,
        memory_mb=cfg.clipembed_index_build_memory_mb,
        build=build,
    )
    summary.index_rebuilt = True
    seconds = round(time.monotonic() - t, 1)
    summary.index_seconds = seconds
    logger.info("index built", extra={"seconds": seconds, "kind": build.kind})
    await rollups.event(
        runtime.pool, "index_build", {"seconds": seconds, "by": "backfill", "space": space.name}
    )
