"""``clipembed backfill --via batch``: plan, upload, submit, poll, apply — resumable at any line.

Every step is recorded in PostgreSQL before the next one starts (``embedding_batches`` and
``embedding_batch_items``, migration 0008), so a process killed anywhere resumes:

======================  ===========================================================
killed ...              on the next run
======================  ===========================================================
before upload           ``planned``: the file is rebuilt from the clips and uploaded
after upload            ``uploaded``: the batch made from that file is looked up at the
                        provider (``find_by_input_file``) and adopted, or created once
after batch creation    same: found by its input file, never created twice
during download         ``completed``: downloaded again (the provider keeps the files)
during apply            items already applied are skipped; the rest are applied
======================  ===========================================================

A clip is in at most one open batch (planning skips clips waiting in one). Clips waiting on the
real-time queue are taken too unless a worker holds them (a lease, or a claim in flight): their
queue rows are *parked* for the batch in the transaction that records its items, so a worker
started meanwhile never embeds them, and given back when the batch is applied (issue 19).
Results are stored only if the clip's text still hashes to what was submitted; an edit made
during the window un-parks the clip (its trigger) and the worker embeds the new text.

A backfill finishes its own job: lines that fail wait on the queue with their reason and are
planned into a later batch by the same run; a text that failed in fallback.MAX_BATCH_ATTEMPTS batches is
embedded synchronously at the end of the run (``sync_fallback``, at most the failed lines), or
dead-lettered with its reason. The unanswered clips of an expired, failed or cancelled batch are
released and planned into a later batch. The enqueued-token limit is never exceeded: a batch is
submitted only when its tokens fit next to those of the batches still at the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from clipembed import clips, errors
from clipembed.batches import fallback, files
from clipembed.batches.apply import BatchApplier
from clipembed.batches.report import BatchSummary
from clipembed.bulk import pipeline
from clipembed.embedding import batching
from clipembed.embedding.providers.openai import OpenAIProvider
from clipembed.embedding.providers.openai_batch import BatchClient, BatchInfo
from clipembed.runtime import Runtime
from clipembed.store import batch_tables

logger = logging.getLogger(__name__)


class BatchBackfill:
    def __init__(
        self,
        runtime: Runtime,
        *,
        client: BatchClient | None = None,
        sync_fallback: bool = True,
    ) -> None:
        svc = runtime.require_service()
        if not isinstance(svc.provider, OpenAIProvider):
            raise errors.ConfigurationError(
                "the Batch API needs EMBEDDING_PROVIDER=openai (use --via sync for a local model)"
            )
        self.rt = runtime
        self.svc = svc
        self.space = runtime.require_space()
        self.provider: OpenAIProvider = svc.provider
        self.client = client or BatchClient(self.provider)
        self.cfg = svc.settings  # the space's model: its prices
        self.summary = BatchSummary()
        self.applier = BatchApplier(runtime, svc, self.client, self.summary)
        self.sync_fallback = sync_fallback
        #: clips skipped because a worker holds them or another batch parked them
        self._held: set[Any] = set()
        #: clips whose text failed in fallback.MAX_BATCH_ATTEMPTS batches: the end of the run takes them
        self._gave_up: dict[Any, pipeline.Pending] = {}

    # ------------------------------------------------------------------ the loop
    async def run(
        self, *, limit: int | None = None, wait: bool = True, stop: asyncio.Event | None = None
    ) -> BatchSummary:
        stop = stop or asyncio.Event()
        started = time.monotonic()
        remaining = limit
        exhausted = False
        while not stop.is_set():
            returned = self.summary.failed_lines + self.summary.released
            await self.advance_open()
            if self.summary.failed_lines + self.summary.released > returned:
                exhausted = False  # failed or unanswered lines are this run's to plan again
            if not exhausted:
                planned = await self.plan_and_submit(remaining)
                if remaining is not None:
                    remaining -= planned
                exhausted = planned == 0 or (remaining is not None and remaining <= 0)
            open_count = len(await self._open())
            self.summary.open_batches = open_count
            if open_count == 0 and exhausted:
                break
            if not wait and (exhausted or not await self._room()):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.embedding_batch_poll_seconds)
        if not stop.is_set() and exhausted and self._gave_up:
            await fallback.finish(self, list(self._gave_up.values()))
        self.summary.interrupted = stop.is_set()
        self.summary.skipped_held = len(self._held)
        self.summary.open_batches = len(await self._open())
        self.summary.duration = time.monotonic() - started
        return self.summary

    async def _open(self) -> list[dict[str, Any]]:
        async with self.rt.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(batch_tables.OPEN_BATCHES, (self.space.id,))
            return list(await cur.fetchall())

    async def _enqueued_tokens(self) -> int:
        async with self.rt.pool.connection() as conn:
            cur = await conn.execute(batch_tables.ENQUEUED_TOKENS, (list(batch_tables.ENQUEUED),))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _room(self) -> int:
        return max(0, self.cfg.embedding_batch_queue_tokens - await self._enqueued_tokens())

    # ------------------------------------------------------------------ plan
    async def plan_and_submit(self, limit: int | None) -> int:
        """Plan batches of clips needing embedding while the token budget allows; submit each."""
        planned_total = 0
        while limit is None or planned_total < limit:
            room = await self._room()
            if room <= 0:
                break
            want = self.cfg.embedding_batch_api_max_inputs
            if limit is not None:
                want = min(want, limit - planned_total)
            batch_id, count = await self._plan_one(want, room)
            if batch_id is None:
                break
            planned_total += count
            await self._upload(batch_id)
            await self._submit(batch_id)
        return planned_total

    async def _candidates(self, want: int) -> list[pipeline.Pending]:
        """Clips needing embedding that no open batch and no worker holds, up to ``want``.

        Queued clips count: the queue only says the clip needs embedding. A text that already
        failed in fallback.MAX_BATCH_ATTEMPTS batches is kept aside for the end of the run."""
        found: list[pipeline.Pending] = []
        page: list[pipeline.Pending] = []

        async def flush() -> None:
            if not page:
                return
            ids = [p.id for p in page]
            async with self.rt.pool.connection() as conn:
                cur = await conn.execute(batch_tables.NOT_IN_A_BATCH, (ids, self.space.id))
                free = {r[0] for r in await cur.fetchall()}
                cur = await conn.execute(batch_tables.HELD, (ids,))
                held = {r[0] for r in await cur.fetchall()}
                cur = await conn.execute(
                    batch_tables.FAILED_BATCHES,
                    (
                        ids,
                        [p.content_hash for p in page],
                        self.space.id,
                        fallback.MAX_BATCH_ATTEMPTS,
                    ),
                )
                gave_up = {r[0] for r in await cur.fetchall()}
            for p in page:
                if p.id not in free:
                    continue
                if p.id in held:
                    self._held.add(p.id)
                elif p.id in gave_up:
                    self._gave_up[p.id] = p
                else:
                    found.append(p)
            page.clear()

        async for item in pipeline.scan(
            self.rt.pool, space=self.space, model=self.svc.model, dimensions=self.svc.dimensions
        ):
            page.append(item)
            if len(page) >= 2000:
                await flush()
                if len(found) >= want:
                    break
        await flush()
        return found[:want]

    async def _plan_one(self, want: int, room: int) -> tuple[int | None, int]:
        items = await self._candidates(want)
        if not items:
            return None, 0
        _, counts = await asyncio.to_thread(self.provider.prepare_batch, [p.text for p in items])
        # within the enqueued-token room, keeping the order
        total, keep = 0, 0
        for n in counts:
            if total + n > room:
                break
            total += n
            keep += 1
        items, counts = items[:keep], counts[:keep]
        if not items:
            return None, 0
        price = self.cfg.price_per_million_tokens
        async with self.rt.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(batch_tables.NEXT_BATCH_ID)
            row = await cur.fetchone()
            assert row is not None
            batch_id = int(row[0])
            # queued clips no worker holds are parked for this batch; the others stay theirs
            ids = [p.id for p in items]
            await conn.execute(batch_tables.PARK, {"batch": batch_id, "ids": ids})
            cur = await conn.execute(batch_tables.NOT_OURS, {"batch": batch_id, "ids": ids})
            theirs = {r[0] for r in await cur.fetchall()}
            if theirs:
                self._held.update(theirs)
                kept = [(p, n) for p, n in zip(items, counts, strict=True) if p.id not in theirs]
                items, counts = [p for p, _ in kept], [n for _, n in kept]
                total = sum(counts)
            if not items:
                return None, 0
            plan = batching.plan_batches(
                counts,
                max_inputs=self.provider.max_inputs_per_request,
                max_tokens=self.provider.max_tokens_per_request,
            )
            await conn.execute(
                batch_tables.CREATE_BATCH,
                {
                    "id": batch_id,
                    "model": self.svc.model,
                    "dimensions": self.svc.dimensions,
                    "requests": len(plan),
                    "clips": len(items),
                    "tokens": total,
                    "cost": total * self.cfg.batch_price_per_million_tokens / 1e6,
                    "sync_cost": total * price / 1e6,
                    "space": self.space.id,
                },
            )
            rows = []
            for r, request in enumerate(plan):
                cid = files.custom_id(batch_id, r)
                for position, i in enumerate(request):
                    p = items[i]
                    rows.append((batch_id, p.id, cid, position, p.content_hash, counts[i]))
            async with conn.cursor() as c:
                await c.executemany(batch_tables.ADD_ITEMS, rows)
        logger.info(
            "batch planned", extra={"batch": batch_id, "clips": len(items), "tokens": total}
        )
        return batch_id, len(items)

    # ------------------------------------------------------------------ upload and submit
    async def _current(self, batch_id: int) -> tuple[list[dict[str, Any]], list[Any]]:
        """The batch's waiting items whose clip still has the planned text; the others' ids."""
        async with self.rt.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(batch_tables.ITEMS, (batch_id,))
            rows = list(await cur.fetchall())
        keep, gone = [], []
        for r in rows:
            if r["title"] is None or r["is_removed"]:
                gone.append(r["clip_id"])
                continue
            text = clips.embedding_text(clips.ClipText.from_row(r))
            digest = clips.content_hash(text, self.svc.model, self.svc.dimensions)
            if digest != bytes(r["content_hash"]):
                gone.append(r["clip_id"])
                continue
            keep.append({**r, "text": text})
        return keep, gone

    async def _upload(self, batch_id: int) -> None:
        keep, gone = await self._current(batch_id)
        if gone:  # edited or removed since planning: they leave the batch before it is sent
            async with self.rt.pool.connection() as conn:
                await conn.execute(batch_tables.DROP_ITEMS, (batch_id, gone))
            self.summary.superseded += len(gone)
        if not keep:
            await self._finish(batch_id)
            return
        sent, _ = await asyncio.to_thread(self.provider.prepare_batch, [r["text"] for r in keep])
        by_request: dict[str, list[str]] = defaultdict(list)
        for r, text in zip(keep, sent, strict=True):
            by_request[r["custom_id"]].append(text)
        requests = [files.Request(cid, tuple(texts)) for cid, texts in by_request.items()]
        data = await asyncio.to_thread(files.input_file, requests, self.client.request_body())
        file_id = await self.client.upload(data, f"clipembed-batch-{batch_id}.jsonl")
        async with self.rt.pool.connection() as conn:
            await conn.execute(batch_tables.SET_UPLOADED, (file_id, batch_id))
        logger.info("batch file uploaded", extra={"batch": batch_id, "bytes": len(data)})

    async def _submit(self, batch_id: int) -> None:
        async with self.rt.pool.connection() as conn:
            cur = await conn.execute(batch_tables.BATCH_FILE, (batch_id,))
            row = await cur.fetchone()
        if row is None or row[0] != "uploaded":
            return
        file_id = str(row[1])
        info = await self.client.find_by_input_file(file_id)  # created before a crash?
        if info is None:
            info = await self.client.create(file_id, {"clipembed_batch": str(batch_id)})
        else:
            logger.info("adopted a batch created before a restart", extra={"batch": batch_id})
        async with self.rt.pool.connection() as conn:
            await conn.execute(
                batch_tables.SET_SUBMITTED, (info.id, info.expires_at or 0, batch_id)
            )
        self.summary.batches_submitted += 1
        async with self.rt.pool.connection() as conn:
            cur = await conn.execute(batch_tables.CLIPS_OF, (batch_id,))
            count = (await cur.fetchone() or (0,))[0]
        self.summary.clips_submitted += int(count)
        logger.info("batch submitted", extra={"batch": batch_id, "provider": info.id})

    # ------------------------------------------------------------------ poll and apply
    async def advance_open(self) -> None:
        """Move every open batch one step: upload, submit, poll, apply."""
        for b in await self._open():
            state, batch_id = b["state"], int(b["id"])
            try:
                if state == "planned":
                    await self._upload(batch_id)
                    await self._submit(batch_id)
                elif state == "uploaded":
                    await self._submit(batch_id)
                else:
                    info = await self.client.retrieve(b["provider_batch_id"])
                    await self._record(batch_id, info)
                    if info.status in batch_tables.FINISHED:
                        await self.applier.apply(batch_id, info)
            except errors.ProviderError as exc:
                logger.warning(
                    "batch step failed; retried on the next poll",
                    extra={"batch": batch_id, "state": state, "reason": str(exc)[:300]},
                )

    async def _record(self, batch_id: int, info: BatchInfo) -> None:
        async with self.rt.pool.connection() as conn:
            await conn.execute(
                batch_tables.SET_PROVIDER_STATE,
                {
                    "id": batch_id,
                    "state": info.status,
                    "counts": Jsonb(info.request_counts),
                    "output": info.output_file_id,
                    "errors": info.error_file_id,
                    "error": "; ".join(info.errors)[:2000] or None,
                    "finished": info.status in batch_tables.FINISHED,
                },
            )

    async def _finish(self, batch_id: int) -> None:
        async with self.rt.pool.connection() as conn:
            await conn.execute(batch_tables.UNPARK, (batch_id,))
            await conn.execute(batch_tables.SET_APPLIED, (batch_id,))

    # ------------------------------------------------------------------ operator actions
    async def cancel(self, batch_id: int) -> str:
        async with self.rt.pool.connection() as conn:
            row = await (await conn.execute(batch_tables.BATCH_FILE, (batch_id,))).fetchone()
            prov = await (await conn.execute(batch_tables.PROVIDER_ID, (batch_id,))).fetchone()
        if row is None:
            raise errors.ConfigurationError(f"no batch {batch_id}")
        state = str(row[0])
        if state in ("planned", "uploaded"):  # never reached the provider: release its clips
            async with self.rt.pool.connection() as conn:
                await conn.execute(batch_tables.RELEASE_WAITING, (batch_id,))
                await conn.execute(batch_tables.UNPARK, (batch_id,))
                await conn.execute(batch_tables.SET_APPLIED, (batch_id,))
            return "released before submission"
        if state == "applied" or state in batch_tables.FINISHED:
            return f"already {state}"
        assert prov is not None and prov[0]
        info = await self.client.cancel(str(prov[0]))
        await self._record(batch_id, info)
        return info.status
