"""``clipembed worker``: keeps every clip's embedding current within seconds.

Each worker LISTENs on ``clipembed_queue`` (the triggers NOTIFY on every insert and text edit)
and also polls every ``CLIPEMBED_QUEUE_POLL_SECONDS``, so a missed notification (a reconnect,
a notification sent while no worker listened) costs seconds, not the item. It claims batches
with a lease, embeds them outside any transaction, and completes them atomically (see
:mod:`clipembed.realtime.queue`). Any number of workers, on any number of machines, share the queue
through PostgreSQL and one rate limit through Redis.

Wake-ups are coalesced (``CLIPEMBED_QUEUE_COALESCE_MS``): woken by a notification, a worker
waits at most that long (counted from the notification, and cut short by a batch's worth of
notifications) so that a burst of single-row inserts becomes one claim, one provider request and
one completion instead of one each per insert; after a full batch it claims again at once. The
claim loops of a process take turns waiting, so a notification costs one claim per process.

A clip whose stored embedding already matches its current text (same content hash and model)
is retired without a provider call — so an edit that is undone, or a row the backfill already
embedded, costs nothing.

Faults: a lost database connection is logged and retried (the pool replaces broken
connections); Redis going away only makes the service uncached; a provider failure counts an
attempt against the affected items only; SIGTERM stops claiming and finishes what is in flight.
An item claimed ``CLIPEMBED_QUEUE_MAX_ATTEMPTS`` times without finishing (it crashes or kills
its worker) is dead-lettered by the next claim; a lease the heartbeat finds lost is logged.

The batch's work with the queue (claim, read, extend, complete, fail, usage) goes through a
:class:`~clipembed.realtime.queue_store.QueueStore`, so its logic is unit-tested against an in-memory
store. LISTEN, the gauges and the status heartbeat (``_report``) need PostgreSQL itself and use
the runtime's database directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import sql

from clipembed.realtime import queue, queue_store, worker_report, worker_spaces
from clipembed.realtime.worker_plan import WorkerStats, more_ready
from clipembed.runtime import Runtime, space_key

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbeddingService
    from clipembed.spaces import Space
from clipembed.status import rollups
from clipembed.store import queue_table

logger = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_DELAY = 1.0  # seconds between attempts to re-establish LISTEN
ERROR_DELAY = 1.0  # seconds to pause after a database error in the claim loop
SETTLE_RETRY_MIN = 30.0  # seconds a finished batch keeps retrying its completion through an outage


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of ``waits`` does (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """``store``: the queue (default: PostgreSQL through the runtime's pool); tests pass a fake.
    LISTEN and ``_report`` use the runtime's database whatever the store."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        name: str | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        store: queue_store.QueueStore | None = None,
    ) -> None:
        cfg = runtime.settings
        self.runtime = runtime
        self.store = queue_store.PgQueueStore(runtime.pool) if store is None else store
        self.service = runtime.require_service()
        self.name = name or worker_name()
        self.batch_size = batch_size or cfg.clipembed_worker_batch_size
        self.concurrency = concurrency or cfg.clipembed_worker_concurrency
        self.lease = cfg.clipembed_queue_lease_seconds
        self.poll = cfg.clipembed_queue_poll_seconds
        self.max_attempts = cfg.clipembed_queue_max_attempts
        self.coalesce = cfg.clipembed_queue_coalesce_ms / 1000
        self.stats = WorkerStats()
        self._wake = asyncio.Event()
        self._woken_at = 0.0  # loop time of the first notification since the wake was cleared
        self._notes = 0  # notifications since the wake was cleared (one per committed transaction)
        self._burst = asyncio.Event()  # a batch's worth of notifications: stop coalescing
        self._gate = asyncio.Lock()  # one claim loop of this process waits for work at a time
        self._backlog = False  # the last claim was a full batch: more is probably ready
        self._in_flight = 0
        self._started_at = dt.datetime.now(dt.UTC)

    # --- LISTEN -------------------------------------------------------------------------------
    def _notified(self, *, catch_up: bool = False) -> None:
        """A notification (or, ``catch_up``, a new LISTEN: work may have waited unseen)."""
        if catch_up:
            self._woken_at = float("-inf")  # nothing to coalesce: claim at once
        elif not self._wake.is_set():
            self._woken_at = asyncio.get_running_loop().time()
        self._wake.set()
        # each notification is at least one ready item (one per transaction: PostgreSQL folds
        # a transaction's notifications), so a batch's worth of them ends the coalescing wait
        self._notes += 1
        if self._notes >= self.batch_size:
            self._burst.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Set the wake event on every notification; reconnect forever until stopped."""
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.runtime.database_url, autocommit=True
                )
                async with conn:
                    await conn.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(queue_table.CHANNEL))
                    )
                    # catch up on anything enqueued while we were not listening
                    self._notified(catch_up=True)
                    gen = conn.notifies()
                    async for _ in gen:
                        self._notified()
                        if stop.is_set():
                            break
            except (psycopg.Error, OSError) as exc:
                logger.warning(
                    "LISTEN connection lost; polling until it is back",
                    extra={"reason": type(exc).__name__},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RECONNECT_DELAY)

    # --- processing ---------------------------------------------------------------------------
    async def _process(self, items: list[queue.Claimed]) -> None:
        self._in_flight += len(items)
        try:
            await self._process_batch(items)
        finally:
            self._in_flight -= len(items)

    async def _service_for(self, space: Space) -> EmbeddingService:
        """``self.service`` for the runtime's own space (tests replace it), else the runtime's."""
        own = self.runtime.space
        if own is not None and space_key(space) == space_key(own):
            return self.service
        return await self.runtime.service_for(space)

    async def _process_batch(self, items: list[queue.Claimed]) -> None:
        ids = [i.clip_id for i in items]
        rows, spaces, stored = await self.store.read(ids)
        items = worker_spaces.current_generations(items, rows)
        heartbeat = asyncio.create_task(self._heartbeat(ids))
        try:
            work = await worker_spaces.embed(self._service_for, items, rows, spaces, stored)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        self.stats.unchanged += work.unchanged
        embedded_before, failed_before = self.stats.embedded, self.stats.failed
        await self._settle(work, work.retire(items), list(work.failures.values()))
        for space, svc, outcome in work.outcomes:
            await self.store.record_usage(
                model=svc.model,
                clips=self.stats.embedded - embedded_before,
                failed=self.stats.failed - failed_before,
                stats=outcome.stats,
                price_per_million=space.settings_for(
                    self.runtime.settings
                ).price_per_million_tokens,
            )
            embedded_before, failed_before = self.stats.embedded, self.stats.failed

    async def _settle(
        self,
        work: worker_spaces.BatchWork,
        retire: list[queue.Claimed],
        failures: list[tuple[queue.Claimed, BaseException]],
    ) -> None:
        """Write and retire, then record failures; retried through a database outage.

        The vectors are paid for: losing them to a PostgreSQL restart would mean waiting for the
        lease to expire and asking the provider again. Completion is idempotent under its
        guards (ours, same generation), so retrying it is safe even after the lease lapsed —
        at worst it writes nothing.
        """
        writes = work.writes
        deadline = asyncio.get_running_loop().time() + max(self.lease, SETTLE_RETRY_MIN)
        delay = ERROR_DELAY / 4
        while True:
            try:
                if writes or retire:
                    done = await self.store.complete(
                        writes, retire, worker=self.name, targets=work.targets
                    )
                    wanted = {w.item.clip_id for w in writes} - set(work.failures)
                    written = wanted & done
                    self.stats.embedded += len(written)
                    self.stats.superseded += len(wanted) - len(written)
                    writes, retire = [], []
                if failures:
                    buried = await self.store.fail_many(
                        failures, worker=self.name, max_attempts=self.max_attempts
                    )
                    for (item, error), dead in zip(failures, buried, strict=True):
                        self._log_failure(item, error, dead=dead)
                    failures = []
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.stats.db_errors += 1
                if asyncio.get_running_loop().time() > deadline:
                    raise
                logger.warning(
                    "database unavailable while completing a batch; retrying",
                    extra={"reason": f"{type(exc).__name__}: {exc}"[:300]},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, ERROR_DELAY * 4)

    def _log_failure(self, item: queue.Claimed, error: BaseException, *, dead: bool) -> None:
        self.stats.failed += 1
        reason = f"{type(error).__name__}: {error}"[:500]
        if dead:
            self.stats.dead_lettered += 1
            logger.error(
                "clip moved to dead letters",
                extra={"clip": str(item.clip_id), "attempts": item.attempts, "reason": reason},
            )
        else:
            logger.warning(
                "clip failed; will retry",
                extra={"clip": str(item.clip_id), "attempt": item.attempts, "reason": reason},
            )

    async def _heartbeat(self, ids: list[Any]) -> None:
        """Extend our leases while a slow (rate-limited) batch is in flight.

        A lease that can no longer be extended (it lapsed and another worker claimed the item,
        or the item left the queue) is logged once and no longer extended. Nothing else is
        needed: completion writes only rows still leased by us *and* of the claimed generation,
        so the result of an item whose lease was lost is dropped, never written twice.
        """
        pending = list(ids)
        while pending:
            await asyncio.sleep(self.lease / 3)
            try:
                lost = await self.store.extend(pending, worker=self.name, lease=self.lease)
            except (psycopg.Error, OSError):
                continue  # the lease may lapse; completion then checks ownership
            for item in lost:
                self.stats.leases_lost += 1
                logger.warning(
                    "lease lost: the clip was claimed by another worker or left the queue; "
                    "this worker's result for it will be discarded",
                    extra={
                        "clip": str(item.clip_id),
                        "worker": self.name,
                        "held_by": item.held_by,
                    },
                )
            gone = {item.clip_id for item in lost}
            pending = [i for i in pending if i not in gone]

    async def run_once(self) -> int:
        """Claim and process one batch; returns how many items were claimed or dead-lettered."""
        result = await self._claim()
        if result.items:
            await self._process(result.items)
        return len(result.items) + len(result.dead_lettered)

    async def _claim(self) -> queue.ClaimResult:
        """Claim up to a batch (logging the items the claim limit dead-lettered instead)."""
        # Cleared before the claim, not after an empty one: a NOTIFY arriving while the claim
        # runs must still wake us, or the item waits a whole poll interval.
        self._wake.clear()
        self._notes = 0
        self._burst.clear()
        self.stats.claims += 1
        result = await self.store.claim(
            worker=self.name, limit=self.batch_size, lease=self.lease, max_claims=self.max_attempts
        )
        for dead in result.dead_lettered:
            self.stats.dead_lettered += 1
            logger.error(
                "clip moved to dead letters: claimed %d times without finishing "
                "(its worker crashed or was killed each time)",
                dead.claims,
                extra={"clip": str(dead.clip_id), "claims": dead.claims, "worker": self.name},
            )
        self.stats.claimed += len(result.items)
        return result

    async def drain(self) -> WorkerStats:
        """Process until the queue has nothing ready (tests and ``worker --drain``)."""
        while await self.run_once():
            pass
        return self.stats

    async def _next_batch(self, stop: asyncio.Event) -> queue.ClaimResult | None:
        """Wait for work, let a burst accumulate, claim it (coalescing on); None when stopped.

        The claim loops of this process take turns through ``_gate``: one waits for a
        notification (or the poll) while the others process, so one NOTIFY costs one claim per
        process rather than one per loop. Woken by a notification, the loop waits until
        ``coalesce`` has passed *since that notification* (no wait at all when the work has
        already waited that long, e.g. while every loop was busy), then claims up to a batch.
        After a full batch it claims again at once: there is a backlog, no reason to wait.
        """
        async with self._gate:
            if stop.is_set():
                return None
            if not self._backlog:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_for_work(stop), self.poll)
                if stop.is_set():
                    return None
                if self._wake.is_set():  # a notification, not the poll
                    loop = asyncio.get_running_loop()
                    left = self._woken_at + self.coalesce - loop.time()
                    if left > 0 and not self._burst.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                _first(stop.wait(), self._burst.wait()), min(left, self.coalesce)
                            )
                    if stop.is_set():
                        return None
            self._backlog = False  # until this claim proves otherwise
            result = await self._claim()
            self._backlog = more_ready(result, self.batch_size)
            return result

    async def _guarded(self, stop: asyncio.Event, step: Callable[[], Awaitable[T]]) -> T | None:
        """One step of a claim loop; a failure is logged, paused on and answered with None.

        A lost database (psycopg_pool.PoolTimeout included, while PostgreSQL restarts) is
        retried; a bug must not end a long-running worker either: the batch's leases expire and
        its items are claimed again (and dead-lettered if they keep failing).
        """
        try:
            return await step()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self.stats.db_errors += 1
            logger.warning(
                "database unavailable; retrying",
                extra={"reason": f"{type(exc).__name__}: {exc}"[:300]},
            )
        except Exception:
            self.stats.errors += 1
            logger.exception("batch failed unexpectedly; its items return after the lease")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ERROR_DELAY)
        return None

    async def _loop(self, stop: asyncio.Event) -> None:
        if self.coalesce <= 0:
            await self._loop_eager(stop)
            return

        async def step() -> None:
            result = await self._next_batch(stop)
            if result is not None and result.items:
                await self._process(result.items)

        while not stop.is_set():
            await self._guarded(stop, step)

    async def _loop_eager(self, stop: asyncio.Event) -> None:
        """``CLIPEMBED_QUEUE_COALESCE_MS=0``: every loop claims on every wake, and again after
        any non-empty claim (the behaviour before coalescing)."""
        while not stop.is_set():
            claimed = await self._guarded(stop, self.run_once)
            if claimed is None or claimed:  # failed (and paused), or more may be ready
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_for_work(stop), self.poll)

    async def _wait_for_work(self, stop: asyncio.Event) -> None:
        await _first(self._wake.wait(), stop.wait())

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until ``stop``; in-flight batches finish first."""
        logger.info(
            "worker started",
            extra={"worker": self.name, "batch": self.batch_size, "concurrency": self.concurrency},
        )
        # The loops run in a TaskGroup with the listener and the reporter: if one of them
        # raises (only a bug can; database errors are retried inside the loop), the others are
        # cancelled and awaited instead of claiming work behind a dead sibling.
        try:
            async with asyncio.TaskGroup() as tasks:
                background = [
                    tasks.create_task(self._listen(stop), name="worker-listen"),
                    tasks.create_task(self._report(stop), name="worker-report"),
                ]
                loops = [
                    tasks.create_task(self._loop(stop), name=f"worker-loop-{i}")
                    for i in range(self.concurrency)
                ]
                await asyncio.wait(loops)  # returns when stop is set (or a loop failed)
                for task in background:
                    task.cancel()
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from group
        with contextlib.suppress(Exception):
            await rollups.stopped(self.runtime.pool, self.name)
        logger.info("worker stopped", extra={"worker": self.name, **dataclasses.asdict(self.stats)})
        return self.stats

    async def _report(self, stop: asyncio.Event) -> None:
        await worker_report.run(self.runtime.pool, stop, lease=self.lease, beat=self._beat)

    async def _beat(self) -> None:
        await rollups.beat(
            self.runtime.pool,
            name=self.name,
            started_at=self._started_at,
            lease=self.lease,
            in_flight=self._in_flight,
            embedded=self.stats.embedded,
            failed=self.stats.failed,
        )
