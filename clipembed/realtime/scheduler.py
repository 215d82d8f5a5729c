"""``clipembed scheduler``: the original's periodic job, made safe to run on many replicas.

Once at start and then every ``EMBEDDING_SCHEDULER_INTERVAL_MINUTES``, it embeds live clips
created in the last ``EMBEDDING_SCHEDULER_WINDOW_DAYS`` that have no embedding (at most
``EMBEDDING_SCHEDULER_LIMIT`` per cycle, newest first), and then runs the reconciliation sweep
that puts anything the real-time triggers missed (rows loaded with triggers disabled, a
changed model or dimension) on the queue for the workers. With several replicas, a
PostgreSQL advisory lock lets one run a cycle at a time; the others skip theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from typing import Any

from psycopg.rows import dict_row

from clipembed import spaces
from clipembed.bulk import pipeline
from clipembed.db import connection
from clipembed.runtime import Runtime
from clipembed.status import rollups, stats
from clipembed.store import space_table

logger = logging.getLogger(__name__)

LOCK_KEY = 0x636C6970_73636864 & 0x7FFFFFFFFFFFFFFF  # "clipschd"


@dataclasses.dataclass
class CycleResult:
    ran: bool  # False when another replica held the lock
    found: int = 0
    embedded: int = 0
    failed: int = 0
    enqueued: int = 0  # by the reconciliation sweep
    seconds: float = 0.0
    last_error: str | None = None


async def run_cycle(runtime: Runtime, *, reconcile: bool = True) -> CycleResult:
    """One cycle under the leader lock; returns what it did."""
    cfg = runtime.settings
    started = time.monotonic()
    async with runtime.pool.connection() as lock_conn:
        cur = await lock_conn.execute(connection.TRY_LOCK, (LOCK_KEY,))
        row = await cur.fetchone()
        await lock_conn.commit()
        if not row or not row[0]:
            logger.info("scheduler cycle skipped: another replica is running one")
            return CycleResult(ran=False)
        try:
            result = CycleResult(ran=True)
            # a long-running scheduler follows promotes: the active space, read per cycle
            space = await spaces.active_in(runtime.pool)
            svc = await runtime.service_for(space)
            window = dt.timedelta(days=cfg.embedding_scheduler_window_days).total_seconds()
            async with runtime.pool.connection() as conn, conn.cursor(row_factory=dict_row) as c:
                await c.execute(
                    space_table.recent_without_embedding(space.table_name),
                    (window, cfg.embedding_scheduler_limit),
                )
                rows = await c.fetchall()
            result.found = len(rows)
            items = [
                pipeline.Pending.from_row(r, model=svc.model, dimensions=svc.dimensions)
                for r in rows
            ]
            if items:
                outcome = await pipeline.embed_and_write(
                    svc, runtime.pool, items, space=space, source="scheduler"
                )
                result.embedded = outcome.written
                result.failed = outcome.failed
                result.last_error = outcome.last_error
            await _housekeeping(runtime)
            if reconcile:
                from clipembed.realtime import reconcile as reconcile_mod

                result.enqueued = await reconcile_mod.sweep(runtime, space=space, service=svc)
            result.seconds = time.monotonic() - started
            logger.info(
                "scheduler cycle done",
                extra={
                    "found": result.found,
                    "embedded": result.embedded,
                    "failed": result.failed,
                    "enqueued": result.enqueued,
                    "seconds": round(result.seconds, 2),
                },
            )
            return result
        finally:
            with contextlib.suppress(Exception):
                await lock_conn.execute(connection.UNLOCK, (LOCK_KEY,))
                await lock_conn.commit()


async def run_scheduler(
    runtime: Runtime, stop: asyncio.Event, *, once: bool = False
) -> list[CycleResult]:
    """Run a cycle now and then every interval until ``stop`` is set (the cycle in progress finishes)."""
    interval = runtime.settings.embedding_scheduler_interval_minutes * 60
    results: list[CycleResult] = []
    while not stop.is_set():
        try:
            results.append(await run_cycle(runtime))
        except (
            Exception
        ) as exc:  # one bad cycle (database restarting...) must not end the scheduler
            logger.error("scheduler cycle failed", extra={"reason": f"{type(exc).__name__}: {exc}"})
            if once:
                raise
        if once:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    return results


def describe(results: list[CycleResult]) -> dict[str, Any]:
    return {
        "cycles": len(results),
        "embedded": sum(r.embedded for r in results),
        "failed": sum(r.failed for r in results),
        "enqueued": sum(r.enqueued for r in results),
    }


async def _housekeeping(runtime: Runtime) -> None:
    """A queue sample for the charts, and old history pruned (best effort)."""
    try:
        async with runtime.pool.connection() as conn:
            figures = await stats.queue_stats(conn)
        await rollups.sample_queue(runtime.pool, figures)
        await rollups.prune(runtime.pool)
    except Exception as exc:
        logger.warning("status housekeeping failed", extra={"reason": type(exc).__name__})
