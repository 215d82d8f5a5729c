"""Bulk work that slows down while search suffers (issue 18, "bulk work that leaves room").

A backfill at full speed on the machine that also serves search takes the cores search needs.
``--max-rate`` caps it by hand; this module is the default that decides from what it measures.

**The signal: how much search suffers, in milliseconds, from two sources** (one statement,
``status_tables.SEARCH_STRAIN``, sampled a few times a second):

- the age of the oldest search statement still running, seen by the database itself: the
  search pool names its connections (``application_name = clipembed-search``, see
  ``db.connection.SEARCH_APPLICATION``). A search answered in 10 ms is rarely caught at all;
  one stuck behind bulk writes is caught, old. It needs the backfill's role to see the search
  role's statements (the same role, or ``pg_read_all_stats``).
- what the search servers report (:mod:`clipembed.api.search_report`): each ``clipembed serve``
  writes, once a second, the mean time a search-pool request waited for its connection and
  held it. Added after the 100,000-clip migration, where searches took 1.2 s at p95 and no
  statement ever ran past 200 ms: the time accrued in the server, short of CPU, not in
  PostgreSQL. A server that reads a replica reports nothing (bulk work on the primary takes
  nothing from it).

The larger of the two is compared with the target.

**The control: additive increase, multiplicative decrease** (TCP's AIMD), once per
:data:`WINDOW_SECONDS`: a window whose oldest search statement ran past the target halves the
pace (from what bulk work actually did in that window, so the first cut bites at once); a
window without one well under the target raises it by a quarter, and back to unpaced once it
passes the ceiling (``--max-rate``, or twice the fastest window measured unpaced). Never below
:data:`FLOOR_FRACTION` of the ceiling: bulk work always progresses. Pure decision logic with
the clock passed in; the sampler is the only part that needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

from clipembed.bulk import pacing
from clipembed.db.connection import SEARCH_APPLICATION
from clipembed.status import rollups
from clipembed.store import status_tables

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 2.0
SAMPLE_SECONDS = 0.2
DECREASE = 0.5
INCREASE = 1.25
#: a window counts as calm when its oldest search statement stayed under this share of the target
CALM_FRACTION = 0.5
FLOOR_FRACTION = 0.05
MIN_FLOOR = 1.0  # clips/s


@dataclasses.dataclass(frozen=True)
class Change:
    """One decision: the new pace (0: unpaced) and why, for the log, the summary and the console."""

    rate: float
    search_ms: float
    target_ms: float
    reason: str


class AdaptivePace:
    """Decides the rate of a :class:`pacing.Pacer` from how much search suffers (pure)."""

    def __init__(
        self, pacer: pacing.Pacer, *, target_ms: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pacer = pacer
        self.target_ms = target_ms
        self.cap = pacer.rate  # --max-rate: never above it (0: none)
        self._clock = clock
        self._window_start = clock()
        self._clips = 0.0
        self._oldest = 0.0
        self._fastest = 0.0  # clips/s of the fastest window measured unpaced
        self.changes: list[Change] = []
        self.slowest = 0.0  # the lowest pace set, for the summary

    @property
    def enabled(self) -> bool:
        return self.target_ms > 0

    def took(self, clips: float) -> None:
        """Bulk work handed ``clips`` clips on (what the window measured it doing)."""
        self._clips += clips

    async def take(self, clips: float) -> None:
        """Wait until ``clips`` fit the pace, then count them: what bulk work calls per batch."""
        await self.pacer.take(clips)
        self.took(clips)

    def observe(self, oldest_ms: float) -> Change | None:
        """A sample of the oldest running search statement; returns a change at a window's end."""
        self._oldest = max(self._oldest, oldest_ms)
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < WINDOW_SECONDS:
            return None
        done = self._clips / elapsed
        oldest, self._oldest, self._clips, self._window_start = self._oldest, 0.0, 0.0, now
        return self._decide(done, oldest)

    def _ceiling(self) -> float:
        if self.cap > 0:
            return self.cap
        return 2 * self._fastest if self._fastest > 0 else 0.0

    def _decide(self, done: float, oldest: float) -> Change | None:
        rate = self.pacer.rate
        paced = rate > 0 and rate != self.cap
        if not paced:
            self._fastest = max(self._fastest, done)
        if oldest > self.target_ms:
            base = min(rate, done) if rate > 0 else done
            if base <= 0:
                return None  # nothing moved in this window: nothing to slow
            floor = max(MIN_FLOOR, FLOOR_FRACTION * (self._ceiling() or base))
            new = max(floor, base * DECREASE)
            if rate > 0 and new >= rate:
                return None  # already at the floor
            return self._set(new, oldest, "search ran past the target")
        if paced and oldest < self.target_ms * CALM_FRACTION:
            new = rate * INCREASE
            ceiling = self._ceiling()
            if ceiling <= 0 or new >= ceiling:
                return self._set(self.cap, oldest, "search is calm: back to full pace")
            return self._set(new, oldest, "search is calm")
        return None

    def _set(self, rate: float, oldest: float, reason: str) -> Change:
        self.pacer.rate = rate
        if rate > 0 and (self.slowest == 0 or rate < self.slowest):
            self.slowest = rate
        change = Change(round(rate, 1), round(oldest, 1), self.target_ms, reason)
        self.changes.append(change)
        return change


class Announcer:
    """Each change to the log; to the console's events (``bulk_pace``) at most every
    EVENT_SECONDS, and always when bulk work is back to full pace, so the console shows the
    current state without writing a row every two seconds."""

    EVENT_SECONDS = 15.0

    def __init__(
        self, pool: AsyncConnectionPool, *, by: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pool = pool
        self.by = by
        self._clock = clock
        self._recorded: float | None = None

    async def __call__(self, change: Change) -> None:
        logger.info(
            "bulk pace changed",
            extra={
                "clips_per_s": change.rate or "unpaced",
                "search_ms": change.search_ms,
                "target_ms": change.target_ms,
                "reason": change.reason,
                "by": self.by,
            },
        )
        now = self._clock()
        if change.rate and self._recorded is not None and now - self._recorded < self.EVENT_SECONDS:
            return
        self._recorded = now
        await rollups.event(self.pool, "bulk_pace", {**dataclasses.asdict(change), "by": self.by})


async def search_strain_ms(pool: AsyncConnectionPool) -> float:
    """How much search suffers now (ms): the oldest running search statement, or the worst
    search server's reported database time per request, whichever is larger."""
    async with pool.connection() as conn:
        cur = await conn.execute(status_tables.SEARCH_STRAIN, (SEARCH_APPLICATION,))
        row = await cur.fetchone()
        await conn.commit()
    return float(row[0]) if row and row[0] is not None else 0.0


async def follow(
    pace: AdaptivePace,
    sample: Callable[[], Awaitable[float]],
    on_change: Callable[[Change], Awaitable[None]],
    *,
    every: float = SAMPLE_SECONDS,
) -> None:
    """Sample until cancelled, applying each decision. A failed sample is skipped (the
    database going away is the backfill's own error to report, not the pace's)."""
    while True:
        try:
            change = pace.observe(await sample())
        except Exception as exc:  # sampling is advisory
            logger.debug("bulk pace sample failed", extra={"reason": type(exc).__name__})
            change = None
        if change is not None:
            await on_change(change)
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def watching(
    pool: AsyncConnectionPool, pacer: pacing.Pacer, *, target_ms: float, by: str
) -> AsyncIterator[AdaptivePace]:
    """An adaptive pace over ``pacer`` that follows search while the block runs (``target_ms``
    0: it never changes the pace). Bulk work calls its ``take`` before each batch."""
    pace = AdaptivePace(pacer, target_ms=target_ms)
    if not pace.enabled:
        yield pace
        return
    task = asyncio.create_task(
        follow(pace, lambda: search_strain_ms(pool), Announcer(pool, by=by)), name=f"{by}-pace"
    )
    try:
        yield pace
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
