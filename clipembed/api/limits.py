"""Per-client limits on public search, so one client cannot spend what everyone shares.

Semantic search is a paid provider call per unique query, and the query lane is one budget
for every searcher (:mod:`clipembed.embedding.query_lane`): one anonymous client sending 120 unique
queries at 1.6/s got half of them 503, and then a new user's query was a 503 too (issue 22).
Two limits per client address (:func:`clipembed.client_limits.client_key`), answered 429 with
``Retry-After``:

- **requests**: ``CLIPEMBED_SEARCH_REQUESTS_PER_SECOND`` (10) with bursts of
  ``CLIPEMBED_SEARCH_BURST`` (20), on /search and /clips/{id}/similar (:func:`per_client`);
- **query embeddings**: ``CLIPEMBED_SEARCH_EMBEDS_PER_MINUTE`` (30) queries a minute that need
  a new provider request. The lane asks (:func:`admission`) only when the query is neither
  cached nor already being embedded for someone else, so repeating a popular query costs
  nothing, and the keyword mode never asks.

Either set to 0 turns it off. Shared through Redis by every process where there is one, in
process otherwise. A backend calling search for its users should be a trusted proxy sending
``X-Forwarded-For`` (:mod:`clipembed.api.clients`), or every user shares its budget.

A request refused for the request budget is **held** before its 429
(:func:`refusal_hold`, at most ``CLIPEMBED_SEARCH_REFUSAL_HOLD_MAX_S``, 5 s): a client that
ignores Retry-After and sends again the moment it is answered, over many connections, would
otherwise turn refusals into a loop that spends the server on 429s. Measured
(``bench/search_flood.py``, docs/benchmarks.md): 256 such connections from one address left 8
other users 1 answer in 91 searches (503s, up to 14 s) with refusals at once; with the hold,
95 of 96 answered, p95 353 ms (404 ms with no flood), and the flood fell from 448 to 57
requests/s.

Contract with the app: its lifespan sets ``app.state.search_limits`` to a
:class:`SearchLimits`; without it (a bare app mounting the router) searches are not limited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from clipembed import client_limits, metrics
from clipembed.embedding.cache import RedisLink
from clipembed.settings import Settings

Admission = Callable[[], Awaitable[None]]


class SearchLimits:
    def __init__(
        self,
        *,
        requests_per_second: float,
        burst: int,
        embeds_per_minute: int,
        link: RedisLink | None = None,
        prefix: str = "clipembed:",
        hold_max_s: float = 0.0,
    ) -> None:
        self.rate = requests_per_second
        self.hold_max_s = hold_max_s
        #: requests held before their 429, per client key, in this process (its load)
        self.held: dict[str, int] = {}
        self.requests = client_limits.KeyedLimiter(
            "search", rate=requests_per_second, burst=burst, link=link, prefix=prefix
        )
        self.embeds = client_limits.KeyedLimiter(
            "search-embeds",
            rate=embeds_per_minute / 60,
            burst=embeds_per_minute,
            link=link,
            prefix=prefix,
        )
        self.refused = client_limits.MinuteCounts("search-refused", link=link, prefix=prefix)

    @classmethod
    def from_settings(cls, settings: Settings, link: RedisLink | None) -> SearchLimits:
        return cls(
            requests_per_second=settings.clipembed_search_requests_per_second,
            burst=settings.clipembed_search_burst,
            embeds_per_minute=settings.clipembed_search_embeds_per_minute,
            link=link,
            prefix=settings.redis_key_prefix,
            hold_max_s=settings.clipembed_search_refusal_hold_max_s,
        )

    def __repr__(self) -> str:
        return f"SearchLimits({self.requests!r}, {self.embeds!r})"

    async def refused_last_hour(self) -> int:
        return await self.refused.last(60)

    async def _refuse(self, limit: str, wait: float, message: str) -> HTTPException:
        metrics.SEARCH_REFUSED.labels(limit).inc()
        await self.refused.add()
        return HTTPException(
            status_code=429,
            detail=message,
            headers={"Retry-After": client_limits.retry_after(wait)},
        )

    async def check_request(self, client: str) -> None:
        key = client_limits.client_key(client)
        wait = await self.requests.take(key)
        if wait <= 0:
            return
        refusal = await self._refuse(
            "requests", wait, "too many searches from this address: slow down"
        )
        self.held[key] = self.held.get(key, 0) + 1
        try:
            retry = float(client_limits.retry_after(wait))
            await asyncio.sleep(refusal_hold(retry, self.held[key], self.rate, self.hold_max_s))
        finally:
            self.held[key] -= 1
            if not self.held[key]:
                del self.held[key]
        raise refusal

    async def check_embedding(self, client: str) -> None:
        wait = await self.embeds.take(client_limits.client_key(client))
        if wait > 0:
            raise await self._refuse(
                "embeddings",
                wait,
                "too many new semantic queries from this address: retry later, or use mode=keyword",
            )


def refusal_hold(retry_after_s: float, held: int, rate: float, most: float) -> float:
    """Seconds to hold a refused request before its 429 (pure).

    At least its Retry-After (a client that honours it waits as long either way), and long
    enough that this address's held requests, ``held`` of them counting this one, come back
    no faster than its budget (``rate`` a second): a closed loop over N connections is slowed
    to the budget rather than to the server's speed at writing 429s. At most ``most``
    (0: no hold), so that held requests stay few and clients' timeouts are not reached.
    """
    if most <= 0:
        return 0.0
    spread = held / rate if rate > 0 else 0.0
    return min(most, max(retry_after_s, spread))


def _limits(request: Request) -> SearchLimits | None:
    found = getattr(request.app.state, "search_limits", None)
    return found if isinstance(found, SearchLimits) else None


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def per_client(request: Request) -> None:
    """A router dependency: this client's request budget (429 past it)."""
    limits = _limits(request)
    if limits is not None:
        await limits.check_request(_client(request))


def admission(request: Request) -> Admission | None:
    """What the query lane awaits before embedding a new query for this client (raises 429)."""
    limits = _limits(request)
    if limits is None or not limits.embeds.enabled:
        return None
    client = _client(request)

    async def admit() -> None:
        await limits.check_embedding(client)

    return admit
