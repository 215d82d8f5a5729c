"""What a running worker tells the operators: the queue gauges for /metrics, its heartbeat in the
status tables (host, pid, in flight), a queue sample per report, and old history pruned.

Every step is best effort (a failed report is tried again at the next one): the figures are for
people, and a full disk for history must never stop a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

from clipembed import metrics
from clipembed.status import rollups, stats

REPORT_SECONDS = 15.0  # gauges, heartbeat and queue sample; at most a third of the lease
PRUNE_EVERY = 40  # reports between two prunings of old status history (~10 min)


async def run(
    pool: AsyncConnectionPool,
    stop: asyncio.Event,
    *,
    lease: float,
    beat: Callable[[], Awaitable[None]],
) -> None:
    """Report every REPORT_SECONDS (and at least three times a lease) until ``stop``."""
    reports = 0
    while not stop.is_set():
        with contextlib.suppress(Exception):
            async with pool.connection() as conn:
                s = await stats.queue_stats(conn)
            metrics.QUEUE_DEPTH.set(s["pending"])
            metrics.QUEUE_OLDEST.set(s["oldest_pending_seconds"])
            metrics.DEAD_LETTERS.set(s["dead_letters"])
            await rollups.sample_queue(pool, s)
        with contextlib.suppress(Exception):
            await beat()
            if reports % PRUNE_EVERY == 0:
                await rollups.prune(pool)
        reports += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(REPORT_SECONDS, lease / 3))
