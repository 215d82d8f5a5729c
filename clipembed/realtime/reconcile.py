"""The reconciliation sweep: find what the real-time triggers missed and put it on the queue.

Triggers see every insert and text edit made through SQL, but not rows loaded with triggers
disabled (``session_replication_role = replica``, some bulk loaders), nor a configuration
change (another model or dimension makes every embedding stale at once). The sweep pages
through live clips by key, recomputes each content hash, and enqueues every clip whose
embedding is missing or stale and that is neither queued nor dead-lettered (a dead letter is
replayed deliberately, with ``clipembed failed retry``, not every sweep). It runs under its
own leader lock, so concurrent sweeps do not duplicate work.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from clipembed.bulk import pipeline
from clipembed.db import connection
from clipembed.realtime import queue
from clipembed.runtime import Runtime
from clipembed.store import queue_table

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbeddingService
    from clipembed.spaces import Space

logger = logging.getLogger(__name__)

LOCK_KEY = 0x636C6970_7377706B & 0x7FFFFFFFFFFFFFFF  # "clipswpk"
ENQUEUE_BATCH = 1000


async def sweep(
    runtime: Runtime, *, space: Space | None = None, service: EmbeddingService | None = None
) -> int:
    """Enqueue every live clip whose embedding in ``space`` (default: the runtime's) is missing
    or stale; returns how many. The worker then brings every space up to date."""
    svc = service or runtime.require_service()
    target = space or runtime.require_space()
    pool = runtime.pool
    async with pool.connection() as lock_conn:
        cur = await lock_conn.execute(connection.TRY_LOCK, (LOCK_KEY,))
        row = await cur.fetchone()
        await lock_conn.commit()
        if not row or not row[0]:
            return 0
        try:
            enqueued = 0
            pending: list[Any] = []

            async def flush() -> int:
                if not pending:
                    return 0
                async with pool.connection() as conn:
                    cur = await conn.execute(queue_table.EXCLUDE_KNOWN, (pending,))
                    fresh = [r[0] for r in await cur.fetchall()]
                    await conn.commit()
                    count = await queue.enqueue(conn, fresh)
                pending.clear()
                return count

            async for item in pipeline.scan(
                pool, space=target, model=svc.model, dimensions=svc.dimensions
            ):
                pending.append(item.id)
                if len(pending) >= ENQUEUE_BATCH:
                    enqueued += await flush()
            enqueued += await flush()
            if enqueued:
                logger.info("reconciliation enqueued clips", extra={"enqueued": enqueued})
            return enqueued
        finally:
            await lock_conn.execute(connection.UNLOCK, (LOCK_KEY,))
            await lock_conn.commit()
