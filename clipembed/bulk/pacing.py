"""A pace for bulk work: at most ``rate`` clips a second (issue 18, "bulk work that leaves room").

A backfill at full speed on the machine that also serves search takes the cores search needs
(docs/benchmarks.md, "A model migration under load"). ``--max-rate`` / ``CLIPEMBED_BACKFILL_
MAX_RATE`` caps it: the reader hands a batch to the embedders only when the clips it carries fit
the pace, so the provider, the database writes and the index maintenance all follow it. Pure
timing logic with an injectable clock, unit-tested without sleeping for real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

EPSILON = 1e-6  # clips: below this a shortfall is rounding, not a reason to wait


class Pacer:
    """A token bucket in clips: ``await take(n)`` returns once ``n`` clips fit ``rate``/s.

    The bucket holds at most ``burst`` clips (one batch by default), so a pause is not made up
    for by a burst afterwards. ``rate`` 0 or less: no pace at all.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._at: float | None = None
        self.waited = 0.0  # seconds spent waiting for the pace (reported by the backfill)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _refill(self, n: float) -> None:
        now = self._clock()
        if self._at is None:
            self._at, self._tokens = now, max(n, self.burst or n)
            return
        cap = max(n, self.burst or n)
        self._tokens = min(cap, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def delay(self, n: float) -> float:
        """Seconds to wait before ``n`` clips fit (0: now); takes them when 0."""
        if not self.enabled:
            return 0.0
        self._refill(n)
        if self._tokens >= n - EPSILON:  # float rounding must not leave a wait of 1e-13 s
            self._tokens = max(0.0, self._tokens - n)
            return 0.0
        return (n - self._tokens) / self.rate

    async def take(self, n: float) -> None:
        while (wait := self.delay(n)) > 0:
            self.waited += wait
            await self._sleep(wait)
