"""What a search server tells bulk work about its searches (issue 18: bulk work that leaves room).

The adaptive pace (:mod:`clipembed.bulk.adaptive_pace`) first watched only the search
statements in ``pg_stat_activity``. In the 100,000-clip model migration it never fired: no
statement ran past 200 ms while searches took 1.2 s at p95. The time accrued in the search
server itself: waiting for a pool connection, and holding one while the process, short of CPU,
got round to sending the statements and reading the rows. Both show in the search pool's own
counters (psycopg_pool's ``pop_stats``: time spent waiting for a connection and time
connections were in use, per request). So ``clipembed serve`` writes, once a second, the mean of
the two per connection request over the last :data:`WINDOW` reports into
``clipembed_search_health`` (one row per server process), and the pace reads the worst fresh row beside the statements' ages. The
provider's time to embed a query is not in it: a slow provider is not the database's load, and
bulk work slowing down would not make it faster.

Only a server whose searches read the primary reports: with ``SEARCH_DATABASE_URL`` (a
replica), bulk work on the primary takes nothing from search. A failed write is logged once and
tried again at the next tick; reporting never fails a search.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
from collections import Counter
from collections.abc import Mapping

from psycopg_pool import AsyncConnectionPool

from clipembed.store import status_tables

logger = logging.getLogger(__name__)

REPORT_SECONDS = 1.0
#: Reports a mean is taken over. The pool counts a request when it asks for a connection and
#: its use when it gives the connection back, often in the next interval: one interval alone
#: would show requests without their time, then time without requests.
WINDOW = 3


def database_ms(stats: Mapping[str, int]) -> tuple[float, int]:
    """The mean milliseconds a connection request waited for and then held its connection,
    and how many requests there were (psycopg_pool's counters since the last ``pop_stats``)."""
    requests = int(stats.get("requests_num", 0))
    spent = int(stats.get("requests_wait_ms", 0)) + int(stats.get("usage_ms", 0))
    if spent <= 0:
        return 0.0, requests
    # time of requests counted before the window: at least one request took it
    return spent / max(1, requests), requests


def server_name() -> str:
    """This process among the search servers (host and pid: two on one machine are two rows)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


async def report(
    search_pool: AsyncConnectionPool,
    write_pool: AsyncConnectionPool,
    stop: asyncio.Event,
    *,
    every: float = REPORT_SECONDS,
    server: str | None = None,
) -> None:
    """Until ``stop``: each ``every`` seconds, the search pool's last interval into the table.

    An idle interval is written too (0 ms, 0 requests): the row's freshness says the server is
    up and calm, and a reader never acts on a stale figure (it reads rows of the last seconds).
    """
    name = server or server_name()
    search_pool.pop_stats()  # start counting from now
    window: collections.deque[Counter[str]] = collections.deque(maxlen=WINDOW)
    failing = False
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
            break
        except TimeoutError:
            pass
        window.append(Counter(search_pool.pop_stats()))
        ms, requests = database_ms(sum(window, Counter()))
        try:
            async with write_pool.connection() as conn:
                await conn.execute(status_tables.REPORT_SEARCH, (name, ms, requests))
            failing = False
        except Exception as exc:  # advisory: never fail the server for it
            if not failing:
                logger.warning("search report failed", extra={"reason": type(exc).__name__})
            failing = True
    try:
        async with write_pool.connection() as conn:
            await conn.execute(status_tables.FORGET_SEARCH_SERVER, (name,))
    except Exception:  # the database may be what is going away
        pass
