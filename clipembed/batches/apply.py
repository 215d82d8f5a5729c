"""Applying a finished batch: download its files, store each answered vector whose clip still
has the submitted text, put failed lines on the queue with their reason (the run plans them
into a later batch), release the unanswered clips, give back the queue rows it parked.

Resumable: items already applied before a restart are skipped, and the batch is marked applied
only at the end. The HNSW index is dropped and rebuilt around a batch that brings a large share
of the vectors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from psycopg.rows import dict_row

from clipembed.batches import files
from clipembed.batches.report import BatchSummary
from clipembed.bulk import adaptive_pace, index_policy, pacing, pipeline
from clipembed.embedding.providers.openai_batch import BatchClient, BatchInfo
from clipembed.embedding.service import EmbeddingService, EmbedStats
from clipembed.realtime import queue as queue_mod
from clipembed.runtime import Runtime
from clipembed.status import rollups
from clipembed.store import batch_tables, clip_table, space_table

logger = logging.getLogger(__name__)

APPLY_CHUNK = 1000  # items written per transaction while applying
#: Drop and rebuild the HNSW index around an apply bringing more than this share of the vectors
#: (per row, maintaining the graph cost ~5 ms and a bulk build ~0.3 ms here: docs/benchmarks.md).
APPLY_REBUILD_FRACTION = 0.1


class BatchApplier:
    def __init__(
        self,
        runtime: Runtime,
        service: EmbeddingService,
        client: BatchClient,
        summary: BatchSummary,
    ) -> None:
        self.rt = runtime
        self.svc = service
        self.space = runtime.require_space()
        self.cfg = service.settings  # the space's model: its prices
        self.client = client
        self.summary = summary

    async def apply(self, batch_id: int, info: BatchInfo) -> None:
        """Download a finished batch's files and store what they answer (resumable)."""
        lines: list[bytes] = []
        for file_id in (info.output_file_id, info.error_file_id):
            if file_id:
                lines.extend((await self.client.content(file_id)).splitlines())
        async with self.rt.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(batch_tables.ALL_ITEMS, (batch_id,))
            items = list(await cur.fetchall())
        expected: dict[str, int] = defaultdict(int)
        for it in items:
            expected[it["custom_id"]] += 1
        parsed = await asyncio.to_thread(
            files.parse, lines, dict(expected), dimensions=self.svc.dimensions
        )
        index: dict[str, int] = defaultdict(int)
        answered: list[tuple[dict[str, Any], Any]] = []
        failed: list[Any] = []
        reasons: list[str] = []
        unanswered: list[Any] = []
        for it in items:
            cid = it["custom_id"]
            position = index[cid]
            index[cid] += 1
            if it["state"] != "waiting":
                continue  # applied before a restart
            if cid in parsed.vectors:
                answered.append((it, parsed.vectors[cid][position]))
            elif cid in parsed.failures:
                failed.append(it["clip_id"])
                reasons.append(f"Batch API line failed: {parsed.failures[cid]}"[:500])
            else:
                unanswered.append(it["clip_id"])
        rebuild = await self._drop_index_for(len(answered))
        pacer = pacing.Pacer(self.cfg.clipembed_backfill_max_rate, burst=APPLY_CHUNK)
        target = self.cfg.clipembed_backfill_search_target_ms
        try:
            async with adaptive_pace.watching(
                self.rt.pool, pacer, target_ms=target, by="batch apply"
            ) as pace:
                for start in range(0, len(answered), APPLY_CHUNK):
                    chunk = answered[start : start + APPLY_CHUNK]
                    # CLIPEMBED_BACKFILL_MAX_RATE and the adaptive pace leave search room
                    await pace.take(len(chunk))
                    await self._write(batch_id, chunk)
        finally:
            if rebuild:
                await self._build_index()
        # many small batches may outgrow an IVFFlat index's lists
        if not rebuild and await index_policy.ivfflat_outgrown(self.rt.pool, self.space):
            await self._build_index()
        async with self.rt.pool.connection() as conn:
            if failed:  # on the queue with their reason: a later batch of this run takes them
                await queue_mod.enqueue(conn, failed)
                await conn.execute(batch_tables.FAILED_REASONS, (failed, reasons))
                await conn.execute(batch_tables.SET_ITEMS, ("failed", batch_id, failed))
                await conn.commit()
            await conn.execute(batch_tables.RELEASE_WAITING, (batch_id,))  # unanswered: re-planned
            # the rows this batch parked go back to the queue (any other space is a worker's)
            await conn.execute(batch_tables.UNPARK, (batch_id,))
            await conn.execute(batch_tables.SET_APPLIED, (batch_id,))
        self.summary.failed_lines += len(failed)
        self.summary.released += len(unanswered)
        tokens = parsed.tokens or sum(int(it["tokens"]) for it, _ in answered)
        async with self.rt.pool.connection() as conn:
            await conn.execute(
                batch_tables.SET_BILLED,
                {
                    "id": batch_id,
                    "tokens": tokens,
                    "cost": tokens * self.cfg.batch_price_per_million_tokens / 1e6,
                    "sync": tokens * self.cfg.price_per_million_tokens / 1e6,
                },
            )
        billed = EmbedStats(tokens=tokens)
        self.summary.embedding.add(billed)
        self.summary.cost_usd += tokens * self.cfg.batch_price_per_million_tokens / 1e6
        self.summary.sync_cost_usd += tokens * self.cfg.price_per_million_tokens / 1e6
        await rollups.record(
            self.rt.pool,
            model=self.svc.model,
            source="batch",
            clips=len(answered),
            failed=len(failed),
            stats=billed,
            price_per_million=self.cfg.batch_price_per_million_tokens,
        )
        logger.info(
            "batch applied",
            extra={
                "batch": batch_id,
                "status": info.status,
                "answered": len(answered),
                "failed": len(failed),
                "unanswered": len(unanswered),
            },
        )

    async def _build_index(self) -> None:
        """Build the space's index after an apply (timed, recorded)."""
        t = time.monotonic()
        await index_policy.rebuild_index(
            self.rt.pool,
            self.space,
            workers=self.cfg.clipembed_index_build_workers,
            memory_mb=self.cfg.clipembed_index_build_memory_mb,
            build=index_policy.index_build(self.cfg),
        )
        seconds = round(time.monotonic() - t, 1)
        self.summary.index_rebuild_seconds += seconds
        await rollups.event(self.rt.pool, "index_build", {"seconds": seconds, "by": "batch"})

    async def _drop_index_for(self, answered: int) -> bool:
        """Drop the HNSW index before applying a batch that brings a large share of the vectors.

        Maintaining the graph row by row costs ~5 ms a row on 2 cores, so applying 50,000
        vectors takes minutes; one build afterwards takes seconds. The index is rebuilt right
        after this batch's apply (also after an error), so semantic search runs without it (an
        exact scan, slower) only for that long.
        """
        async with self.rt.pool.connection() as conn:
            cur = await conn.execute(space_table.count_rows(self.space.table_name))
            embedded = int((await cur.fetchone() or (0,))[0])
        # maintaining the graph costs ~15x a bulk build per row: rebuild once a batch brings
        # more than a tenth of the vectors the index will hold
        total = embedded + answered
        if answered < index_policy.REBUILD_MIN_ROWS or answered <= APPLY_REBUILD_FRACTION * total:
            return False
        if not await index_policy.index_exists(self.rt.pool, self.space):
            return False
        await index_policy.drop_index(self.rt.pool, self.space)
        return True

    async def _write(self, batch_id: int, chunk: list[tuple[dict[str, Any], Any]]) -> None:
        """Store vectors whose clip still has the submitted text; mark the rest superseded."""
        ids = [it["clip_id"] for it, _ in chunk]
        async with self.rt.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(clip_table.CLIP_TEXTS, (ids,))
            current = {r["id"]: r for r in await cur.fetchall()}
        todo: list[pipeline.Pending] = []
        vectors = []
        stale = []
        for it, vec in chunk:
            row = current.get(it["clip_id"])
            if row is None or row["is_removed"]:
                stale.append(it["clip_id"])
                continue
            item = pipeline.Pending.from_row(
                row, model=self.svc.model, dimensions=self.svc.dimensions
            )
            if item.content_hash != bytes(it["content_hash"]):
                stale.append(it["clip_id"])
                continue
            todo.append(item)
            vectors.append(vec)
        written = await pipeline.write_batch(
            self.rt.pool,
            todo,
            vectors,
            space=self.space,
            model=self.svc.model,
            dimensions=self.svc.dimensions,
        )
        # an edit between reading the text and writing makes write_batch skip the clip: also stale
        async with self.rt.pool.connection() as conn:
            found = await conn.execute(
                space_table.embedded_with(self.space.table_name),
                ([p.id for p in todo], [p.content_hash for p in todo]),
            )
            done = [r[0] for r in await found.fetchall()]
            written_ids = set(done)
            stale.extend(p.id for p in todo if p.id not in written_ids)
            await conn.execute(batch_tables.SET_ITEMS, ("applied", batch_id, done))
            if stale:
                await conn.execute(batch_tables.SET_ITEMS, ("superseded", batch_id, stale))
        self.summary.applied += written
        self.summary.superseded += len(stale)
