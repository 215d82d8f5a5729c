"""``clipembed model compare``: how a candidate space would change search, before a promote.

Two measures, both read-only:

- **Overlap of top-10**: for each query (the active space's recent queries, a file of queries,
  or, with neither, a sample of clip titles), the semantic top 10 in the active space and in
  the candidate, each query embedded by its own space's model; the share of the 10 they have in
  common, averaged. 1.0: the candidate answers like the active space; a low overlap is a change
  users will see (for better or worse: the overlap does not say which).
- **nDCG@10 with judgements**: with a BEIR directory, the benchmark is embedded by both models
  and scored in semantic and hybrid mode (``clipembed.eval.spaces``): which one ranks better.

Recent queries are recorded by the search API in Redis (a list capped at
:data:`RECENT_MAX`, best effort: a search never waits for it or fails because of it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import statistics
from typing import TYPE_CHECKING, Any

from clipembed.search import clips as clip_search
from clipembed.search import core

if TYPE_CHECKING:
    from clipembed.embedding.cache import RedisLink
    from clipembed.runtime import Runtime
    from clipembed.spaces.registry import Space

logger = logging.getLogger(__name__)

RECENT_MAX = 1000
RECENT_KEY = "recent_queries"
SAMPLE_TITLES = "SELECT title FROM clips WHERE NOT is_removed ORDER BY random() LIMIT %s"
_pending: set[asyncio.Task[Any]] = set()


def recent_key(prefix: str) -> str:
    return f"{prefix}{RECENT_KEY}"


def remember(link: RedisLink | None, prefix: str, query: str) -> None:
    """Record a query for ``compare`` in the background (never awaited by the search)."""
    if link is None or not link.available:
        return
    key = recent_key(prefix)

    async def push(client: Any) -> None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, query)
            pipe.ltrim(key, 0, RECENT_MAX - 1)
            await pipe.execute()

    task = asyncio.get_running_loop().create_task(link.call(push, None))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def recent(link: RedisLink | None, prefix: str, limit: int) -> list[str]:
    """The most recent distinct queries, newest first."""
    if link is None:
        return []

    async def read(client: Any) -> list[bytes]:
        return list(await client.lrange(recent_key(prefix), 0, RECENT_MAX - 1))

    seen: dict[str, None] = {}
    empty: list[bytes] = []
    for raw in await link.call(read, empty):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        seen.setdefault(text, None)
        if len(seen) >= limit:
            break
    return list(seen)


@dataclasses.dataclass
class Overlap:
    queries: int
    source: str
    mean: float
    median: float
    minimum: float
    per_query: list[tuple[str, float]]

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["per_query"] = [{"query": q, "overlap": o} for q, o in self.per_query[:50]]
        return out


def overlap_at(a: list[Any], b: list[Any], k: int = 10) -> float:
    """Share of the top ``k`` of ``a`` found in the top ``k`` of ``b`` (pure)."""
    top_a, top_b = a[:k], set(b[:k])
    if not top_a and not top_b:
        return 1.0
    return sum(1 for x in top_a if x in top_b) / max(len(top_a), min(k, len(b)), 1)


async def queries_for(rt: Runtime, *, given: list[str] | None, limit: int) -> tuple[list[str], str]:
    """The queries to compare on and where they came from."""
    if given is not None:
        return given[:limit], "given queries"
    svc = rt.require_service()
    found = await recent(svc.link, rt.settings.redis_key_prefix, limit)
    if found:
        return found, "recent queries"
    async with rt.pool.connection() as conn:
        cur = await conn.execute(SAMPLE_TITLES, (limit,))
        titles = [r[0] for r in await cur.fetchall()]
    return titles, "clip titles (no recent queries recorded)"


async def top10(rt: Runtime, space: Space, texts: list[str]) -> list[list[Any]]:
    """The semantic top 10 of each text in a space, embedded by the space's model."""
    svc = await rt.service_for(space)
    vectors = (await svc.embed(texts)).vectors
    corpus = clip_search.corpus_for(space)
    params = core.Params(mode="semantic", limit=10, window=10)
    where = clip_search.Filters(include_nsfw=True).where()
    out = []
    async with rt.pool.connection() as conn:
        for vector in vectors:
            hits = await core.semantic_branch(conn, corpus, vector, where, params, 10)
            out.append([h[0] for h in hits])
    return out


async def overlap(
    rt: Runtime,
    active: Space,
    candidate: Space,
    *,
    given: list[str] | None = None,
    limit: int = 200,
) -> Overlap:
    texts, source = await queries_for(rt, given=given, limit=limit)
    texts = [
        clip_search.clean_query(t, required=False)[: clip_search.MAX_QUERY_CHARS] for t in texts
    ]
    texts = [t for t in texts if t]
    if not texts:
        return Overlap(0, source, 0.0, 0.0, 0.0, [])
    a = await top10(rt, active, texts)
    b = await top10(rt, candidate, texts)
    scores = [overlap_at(x, y) for x, y in zip(a, b, strict=True)]
    per_query = sorted(zip(texts, scores, strict=True), key=lambda p: p[1])
    return Overlap(
        len(texts),
        source,
        round(statistics.fmean(scores), 4),
        round(statistics.median(scores), 4),
        round(min(scores), 4),
        per_query,
    )
