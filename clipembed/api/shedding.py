"""Load shedding for search (issue 18): answer "overloaded" at once instead of timing out late.

Under more concurrent searches than the machine can serve, every search used to queue for a
pool connection and many failed after the pool's 30-second timeout (docs/benchmarks.md, "A
model migration under load"): each user waited long, then got an error anyway. Here a search is
admitted only while the searches already in the process could be served within the search
deadline (``SEARCH_STATEMENT_TIMEOUT_MS``) at the rate searches have been completing
(Little's law: waiting time ~ in flight / throughput); past that it gets 503 + ``Retry-After``
with "overloaded" at once (a metric, a log line, a console figure). Before the first searches
have completed, up to ``STARTUP_FACTOR`` searches per pool connection are admitted.

Pure bookkeeping with an injectable clock; the dependency in :mod:`.search_routes` holds a
search's place for the time of the request.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

from clipembed import metrics

logger = logging.getLogger(__name__)

#: Seconds of completions the throughput is measured over. A machine's search capacity changes
#: over tens of seconds (bulk work starts or ends); a stall of a second or two is not a new
#: capacity. Over 5 s, one 1.5 s stall at 20 searches/s cut the admitted searches from 40 to
#: 28 while they piled up behind it: in the 100,000-clip migration all 14 failures fell in one
#: such window, and the searches admitted there still answered within 1.9 s. Over 20 s the same
#: stall admits 37. What a longer window costs: after a sudden drop in capacity, more searches
#: are admitted for a while than can finish, and those get 503 at their deadline, not at once.
WINDOW = 20.0
MIN_SAMPLES = 10  # completions before the measured throughput is trusted
MIN_SPAN = 0.5  # seconds: the shortest span a rate is computed over
STARTUP_FACTOR = 8  # searches admitted per pool connection before anything is measured
CUT_SHARE = 0.85  # of the deadline an admitted search may run before it is cut
LOG_EVERY = 10.0  # seconds between two "overloaded" log lines (a flood must not flood the log)


class Shedder:
    def __init__(
        self,
        *,
        connections: int,
        deadline_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connections = max(1, connections)
        self.deadline = max(0.05, deadline_seconds)
        self._clock = clock
        self._done: collections.deque[float] = collections.deque()
        self.in_flight = 0
        self.shed_total = 0
        self._logged_at = float("-inf")

    def throughput(self) -> float | None:
        """Searches completed per second over the last WINDOW seconds (None: too few yet).

        Over the span the completions cover, not the whole WINDOW: when searches start (at
        start-up, after a quiet spell) ten completions in half a second are 20 a second, not 2.
        Dividing by the WINDOW made the shedder refuse searches in the first seconds of load
        (the migration benchmark's first 30 s: 10 failures before any bulk work began)."""
        now = self._clock()
        while self._done and self._done[0] < now - WINDOW:
            self._done.popleft()
        if len(self._done) < MIN_SAMPLES:
            return None
        return (len(self._done) - 1) / max(now - self._done[0], MIN_SPAN)

    def allowed(self) -> int:
        """Searches that may be in flight: what completes within the deadline, at least the pool.

        Tried and taken back (2026-12-07): admitting half a deadline's worth, and only the
        pool's worth while the event loop lagged past 100 ms. In the 100,000-clip migration
        that shed 145 of 8,039 searches (9 before) while p95 stayed at 653 ms, and under
        overload it did not shorten the wait before admission, where the time went
        (docs/benchmarks.md, "Overload")."""
        rate = self.throughput()
        if rate is None:
            return self.connections * STARTUP_FACTOR
        return max(self.connections, int(rate * self.deadline))

    def deadline_from(self, admitted_at: float) -> float:
        """When an admitted search is cut (the loop's clock): CUT_SHARE of the deadline after its
        admission. The rest pays for what the cut does not cover: the wait before admission
        (accept, parse), cancelling the statements, and the 503 itself. Cut at the full
        deadline, 1 % of the answers under overload came 150-250 ms late (`bench.search_overload
        --driver wrk`: max 2,249 ms against a 2 s deadline)."""
        return admitted_at + self.deadline * CUT_SHARE

    def try_enter(self) -> bool:
        if self.in_flight >= self.allowed():
            self.shed_total += 1
            metrics.SEARCH_SHED.inc()
            now = self._clock()
            if now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                logger.warning(
                    "search overloaded: shedding",
                    extra={
                        "in_flight": self.in_flight,
                        "allowed": self.allowed(),
                        "shed_total": self.shed_total,
                    },
                )
            return False
        self.in_flight += 1
        return True

    def leave(self, *, answered: bool = True) -> None:
        """A search is over. Only one that ``answered`` counts towards the rate: a search cut
        at its deadline (or failed) did not show capacity, it used it up. Counting cut searches
        fed overload with more admissions: with 512 clients at once 2,422 were cut against
        1,029 answered, at 34 answers/s where 128 clients got 113 (`bench.search_overload
        --driver wrk`)."""
        self.in_flight = max(0, self.in_flight - 1)
        if answered:
            self._done.append(self._clock())
