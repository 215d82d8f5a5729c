"""The queue behind one small seam: what a worker asks of the database, and its PostgreSQL side.

:class:`QueueStore` is everything :class:`clipembed.realtime.worker.Worker` does with the queue and
the clips while it processes a batch: claim, read the texts (and the spaces with their stored
hashes), extend leases, complete with the vectors, record failures, add the batch's usage to
the status rollup. :class:`PgQueueStore` is the real one: each call takes a connection from the
pool and runs the statements of :mod:`clipembed.realtime.queue`, whose module docstring is the
contract (leases, generations, backoff, dead letters, the claim limit). The in-memory
implementation that honours the same contract is a test double,
:class:`clipembed.testing.queue_store.InMemoryQueueStore` (procrastinate's ``JobManager`` over a
connector, with its ``InMemoryConnector``); a contract test runs one scenario against both.

Errors are not translated: the PostgreSQL store raises psycopg's (and ``OSError``,
``TimeoutError``) and the worker retries those, as it did before the seam existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from clipembed.realtime import queue, worker_spaces
from clipembed.status import rollups

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from clipembed.embedding.service import EmbedStats
    from clipembed.spaces import Space

    #: the clips' text columns by id, every space (the active one first), and per space id the
    #: content hashes it stores for these clips
    BatchInput = tuple[dict[Any, dict[str, Any]], list[Space], dict[int, dict[Any, bytes]]]


class QueueStore(Protocol):
    """The queue as a worker uses it (the semantics are :mod:`clipembed.realtime.queue`'s)."""

    async def claim(
        self, *, worker: str, limit: int, lease: float, max_claims: int
    ) -> queue.ClaimResult: ...

    async def read(self, ids: Sequence[Any]) -> BatchInput: ...

    async def extend(
        self, ids: Sequence[Any], *, worker: str, lease: float
    ) -> list[queue.LostLease]: ...

    async def complete(
        self,
        writes: Sequence[queue.SpaceWrite],
        retire: Sequence[queue.Claimed],
        *,
        worker: str,
        targets: Sequence[queue.SpaceTarget],
    ) -> set[Any]: ...

    async def fail_many(
        self,
        failures: Sequence[tuple[queue.Claimed, BaseException | str]],
        *,
        worker: str,
        max_attempts: int,
    ) -> list[bool]: ...

    async def record_usage(
        self,
        *,
        model: str,
        clips: int,
        failed: int,
        stats: EmbedStats,
        price_per_million: float,
    ) -> None:
        """Add one batch's figures (clips written, failures, provider use) to the rollup."""
        ...


class PgQueueStore:
    """:class:`QueueStore` over a pool: one connection per call, the SQL of :mod:`queue`."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def claim(
        self, *, worker: str, limit: int, lease: float, max_claims: int
    ) -> queue.ClaimResult:
        async with self.pool.connection() as conn:
            return await queue.claim(
                conn, worker=worker, limit=limit, lease=lease, max_claims=max_claims
            )

    async def read(self, ids: Sequence[Any]) -> BatchInput:
        async with self.pool.connection() as conn:
            return await worker_spaces.read(conn, list(ids))

    async def extend(
        self, ids: Sequence[Any], *, worker: str, lease: float
    ) -> list[queue.LostLease]:
        async with self.pool.connection() as conn:
            return await queue.extend(conn, ids, worker=worker, lease=lease)

    async def complete(
        self,
        writes: Sequence[queue.SpaceWrite],
        retire: Sequence[queue.Claimed],
        *,
        worker: str,
        targets: Sequence[queue.SpaceTarget],
    ) -> set[Any]:
        async with self.pool.connection() as conn:
            return await queue.complete(conn, writes, retire, worker=worker, targets=targets)

    async def fail_many(
        self,
        failures: Sequence[tuple[queue.Claimed, BaseException | str]],
        *,
        worker: str,
        max_attempts: int,
    ) -> list[bool]:
        async with self.pool.connection() as conn:
            return await queue.fail_many(conn, failures, worker=worker, max_attempts=max_attempts)

    async def record_usage(
        self,
        *,
        model: str,
        clips: int,
        failed: int,
        stats: EmbedStats,
        price_per_million: float,
    ) -> None:
        await rollups.record(
            self.pool,
            model=model,
            source="worker",
            clips=clips,
            failed=failed,
            stats=stats,
            price_per_million=price_per_million,
        )
