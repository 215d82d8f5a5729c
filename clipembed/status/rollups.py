"""What the jobs write as they work: per-minute rollups, queue samples, heartbeats, events.

Every write is one short upsert; a failure to record is logged and ignored (the figures are for
people, the embeddings are the product: a full disk for history must not stop a backfill).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from clipembed.store import status_tables

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbedStats

logger = logging.getLogger(__name__)

RETENTION_DAYS = 35  # history kept: the 30-day figures plus a margin
VERSION = "0.1.0"


async def record(
    pool: AsyncConnectionPool,
    *,
    model: str,
    source: str,
    clips: int,
    failed: int,
    stats: EmbedStats,
    price_per_million: float,
) -> None:
    """Add one batch's figures to this minute's rollup (clips written, failures, provider use)."""
    if not (clips or failed or stats.requests or stats.cache_hits):
        return
    args = {
        "model": model,
        "source": source,
        "clips": clips,
        "failed": failed,
        "requests": stats.requests,
        "rate_limited": stats.rate_limited,
        "tokens": stats.tokens,
        "cache_hits": stats.cache_hits,
        "cache_misses": stats.cache_misses,
        "cost_usd": stats.tokens * price_per_million / 1_000_000,
    }
    try:
        async with pool.connection() as conn:
            await conn.execute(status_tables.RECORD, args)
    except Exception as exc:  # history is best effort; the batch itself is written
        logger.warning("could not record a rollup", extra={"reason": type(exc).__name__})


async def sample_queue(pool: AsyncConnectionPool, stats: dict[str, Any]) -> None:
    """This minute's queue depth, oldest age and dead letters (the backlog and lag charts)."""
    async with pool.connection() as conn:
        await conn.execute(
            status_tables.SAMPLE_QUEUE,
            (stats["pending"], stats["oldest_pending_seconds"], stats["dead_letters"]),
        )


async def beat(
    pool: AsyncConnectionPool,
    *,
    name: str,
    started_at: Any,
    lease: float,
    in_flight: int,
    embedded: int,
    failed: int,
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            status_tables.WORKER_BEAT,
            {
                "name": name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": VERSION,
                "started_at": started_at,
                "lease": lease,
                "in_flight": in_flight,
                "embedded": embedded,
                "failed": failed,
            },
        )


async def stopped(pool: AsyncConnectionPool, name: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(status_tables.WORKER_STOPPED, (name,))


async def event(pool: AsyncConnectionPool, kind: str, detail: dict[str, Any]) -> None:
    try:
        async with pool.connection() as conn:
            await conn.execute(status_tables.EVENT, (kind, Jsonb(json.loads(json.dumps(detail)))))
    except Exception as exc:
        logger.warning("could not record an event", extra={"kind": kind, "reason": str(exc)})


async def prune(pool: AsyncConnectionPool, days: int = RETENTION_DAYS) -> None:
    async with pool.connection() as conn:
        for statement in status_tables.PRUNE:
            await conn.execute(statement, (days,))
