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

Contract with the app: its lifespan sets ``app.state.search_limits`` to a
:class:`SearchLimits`; without it (a bare app mounting the router) searches are not limited.
"""

from __future__ import annotations

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
    ) -> None:
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
        wait = await self.requests.take(client_limits.client_key(client))
        if wait > 0:
            raise await self._refuse(
                "requests", wait, "too many searches from this address: slow down"
            )

    async def check_embedding(self, client: str) -> None:
        wait = await self.embeds.take(client_limits.client_key(client))
        if wait > 0:
            raise await self._refuse(
                "embeddings",
                wait,
                "too many new semantic queries from this address: retry later, or use mode=keyword",
            )


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
