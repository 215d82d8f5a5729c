"""The embedding service: cache -> dedupe -> truncate -> batch -> limit -> retry -> provider -> validate.

``embed(texts)`` returns vectors in input order; ``embed_detailed(texts)`` never raises for
provider failures and gives each text its vector or its error, so a job stores what succeeded
and reports (and later retries) what did not. A batch that fails permanently is split in halves
until the poison text is alone, so one bad input never sinks its neighbours.

The retry policy is a table (:func:`should_retry`, :func:`backoff`): 429, 5xx, timeouts,
connection errors and invalid answers are retried up to ``EMBEDDING_MAX_ATTEMPTS`` with
exponential backoff and jitter, never sooner than the provider's ``retry-after``;
400/401/403/404 fail at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Sequence

import numpy as np
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from clipembed import clips, embedded, errors, metrics
from clipembed.embedding import batching, providers, query_lane, ratelimit
from clipembed.embedding.cache import EmbeddingCache, RedisLink
from clipembed.embedding.providers import base
from clipembed.embedding.ratelimit import RateLimiter
from clipembed.settings import Settings

logger = logging.getLogger(__name__)

BACKOFF_BASE = 0.5  # seconds before the first retry (before jitter)
BACKOFF_MAX = 20.0  # seconds: the longest wait between two attempts


def should_retry(exc: BaseException) -> bool:
    """The retry table: retryable provider errors yes, everything else no."""
    return isinstance(exc, errors.RetryableProviderError)


def backoff(attempt: int, retry_after: float | None = None, *, rand: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    "Equal jitter" (AWS's name) under an exponential ceiling: uniformly in [ceiling/2, ceiling],
    so clients that failed together spread out, yet no retry comes back at once (full jitter
    can wait ~0 s, which a 5xx burst makes pointless); never less than the provider's retry-after.
    """
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
    r = random.random() if rand is None else rand
    wait = ceiling / 2 + r * ceiling / 2
    return float(max(wait, retry_after or 0.0))


@dataclasses.dataclass
class EmbedStats:
    """Counters for one call (and, summed, for the service's lifetime)."""

    texts: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    deduplicated: int = 0
    requests: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: int = 0

    def add(self, other: EmbedStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def since(self, before: EmbedStats) -> EmbedStats:
        """What was counted after ``before`` (a copy of these counters) was taken: a run's share
        of the service's lifetime totals."""
        return EmbedStats(
            **{
                f.name: getattr(self, f.name) - getattr(before, f.name)
                for f in dataclasses.fields(self)
            }
        )

    @property
    def cache_hit_rate(self) -> float:
        looked_up = self.cache_hits + self.cache_misses
        return self.cache_hits / looked_up if looked_up else 0.0


@dataclasses.dataclass
class EmbedOutcome:
    """Per text: its vector or its error (exactly one is set), and whether it came from the cache."""

    vectors: list[np.ndarray | None]
    errors: list[BaseException | None]
    from_cache: list[bool]
    stats: EmbedStats

    @property
    def ok(self) -> bool:
        return all(e is None for e in self.errors)


@dataclasses.dataclass
class EmbedResult:
    vectors: base.Vectors  # (n, dimensions), input order
    from_cache: list[bool]
    stats: EmbedStats


class EmbeddingService:
    """Embeds texts through one provider with cache, shared limits, retries and bounded concurrency."""

    def __init__(
        self,
        provider: base.EmbeddingProvider,
        *,
        settings: Settings,
        limiter: RateLimiter,
        cache: EmbeddingCache | None = None,
        link: RedisLink | None = None,
        queries: query_lane.QueryEmbedder | None = None,
    ) -> None:
        self.provider = provider
        self.model = provider.model
        self.dimensions = provider.dimensions
        self.settings = settings
        self.cache = cache
        self.link = link
        self.limiter = limiter
        self.stats = EmbedStats()
        # A local model already uses every core for one encode; two at once only contend.
        parallel = provider.capabilities.parallel_requests
        self._semaphore = asyncio.Semaphore(settings.embedding_max_concurrency if parallel else 1)
        self._max_attempts = settings.embedding_max_attempts
        self._inflight: dict[str, asyncio.Future[np.ndarray | BaseException]] = {}
        #: search's query embeddings over the same provider, cache and budget (built beside the
        #: service by :func:`open_service`; None for a bare service in tests)
        self.queries = queries

    def __repr__(self) -> str:
        return f"EmbeddingService({self.provider!r}, cache={self.cache is not None})"

    # --- public -------------------------------------------------------------------------------
    def prepare(self, text: str) -> str:
        """The text as it is cached and hashed: sanitised (truncation happens only on send)."""
        return clips.sanitize(text)

    def count_tokens(self, text: str) -> int:
        return self.provider.count_tokens(self.provider.truncate(self.prepare(text)))

    async def embed(self, texts: Sequence[str]) -> EmbedResult:
        """Vectors in input order; raises the first error if any text failed."""
        outcome = await self.embed_detailed(texts)
        for err in outcome.errors:
            if err is not None:
                raise err
        if not texts:
            return EmbedResult(np.zeros((0, self.dimensions), np.float32), [], outcome.stats)
        vectors = np.stack([v for v in outcome.vectors if v is not None])
        return EmbedResult(vectors, outcome.from_cache, outcome.stats)

    async def embed_detailed(self, texts: Sequence[str]) -> EmbedOutcome:
        stats = EmbedStats(texts=len(texts))
        n = len(texts)
        vectors: list[np.ndarray | None] = [None] * n
        errs: list[BaseException | None] = [None] * n
        cached = [False] * n

        positions: dict[str, list[int]] = {}
        for i, raw in enumerate(texts):
            text = self.prepare(raw)
            if not text:
                errs[i] = errors.PermanentProviderError("empty text: nothing to embed")
                continue
            positions.setdefault(text, []).append(i)
        unique = list(positions)
        stats.deduplicated = sum(len(p) - 1 for p in positions.values())
        results, hits = await self._resolve(unique, stats)

        for text, idxs in positions.items():
            value = results[text]
            for i in idxs:
                if isinstance(value, BaseException):
                    errs[i] = value
                else:
                    vectors[i] = value
                    cached[i] = text in hits
        stats.failures = sum(1 for e in errs if e is not None)
        metrics.TEXTS.labels(self.model, "cache").inc(sum(cached))
        metrics.TEXTS.labels(self.model, "provider").inc(
            sum(1 for i in range(n) if vectors[i] is not None and not cached[i])
        )
        self.stats.add(stats)
        return EmbedOutcome(vectors, errs, cached, stats)

    async def aclose(self) -> None:
        if self.queries is not None:
            await self.queries.aclose()
        await self.provider.aclose()
        if self.link is not None:
            await self.link.aclose()

    # --- internals ----------------------------------------------------------------------------
    async def _resolve(
        self, texts: list[str], stats: EmbedStats
    ) -> tuple[dict[str, np.ndarray | BaseException], set[str]]:
        """Each text's vector or error, and which came from the cache.

        "Single flight": a text another call of this process is already resolving is awaited,
        not looked up or sent again, so identical clip texts in two concurrent batches (one
        backfill, several workers) cost one provider input. A call claims its texts before its
        first await and releases them only once their vectors are in the cache: a text is
        either claimed, or cached, or neither, and never sent twice for lack of a moment
        between the two. (Before, a claim ended when the provider answered and the cache was
        written after it: a call that had looked the cache up meanwhile sent the text again,
        seen under a parallel CPU load as a text embedded twice.)
        """
        waiting = {t: self._inflight[t] for t in texts if t in self._inflight}
        mine = [t for t in texts if t not in waiting]
        loop = asyncio.get_running_loop()
        futures = {t: loop.create_future() for t in mine}
        self._inflight.update(futures)
        out: dict[str, np.ndarray | BaseException] = {}
        hits: set[str] = set()
        try:
            found: list[np.ndarray | None] = [None] * len(mine)
            if self.cache is not None and mine:
                found = await self.cache.get_many(mine)
            for text, vec in zip(mine, found, strict=True):
                if vec is not None:
                    out[text] = vec
                    hits.add(text)
            misses = [t for t in mine if t not in hits]
            stats.cache_hits = len(hits)
            stats.cache_misses = len(misses) if self.cache is not None else 0
            metrics.CACHE_LOOKUPS.labels(self.model, "hit").inc(stats.cache_hits)
            metrics.CACHE_LOOKUPS.labels(self.model, "miss").inc(stats.cache_misses)
            if misses:
                out.update(await self._send(misses, stats))
                if self.cache is not None:
                    stored = [(t, v) for t in misses if isinstance(v := out[t], np.ndarray)]
                    await self.cache.set_many(stored)
        except BaseException as exc:
            for t in mine:
                out.setdefault(
                    t, exc if isinstance(exc, Exception) else errors.ProviderError("cancelled")
                )
            raise
        finally:
            for t, fut in futures.items():
                if self._inflight.get(t) is fut:
                    del self._inflight[t]
                if not fut.done():
                    fut.set_result(out.get(t, errors.ProviderError("embedding was cancelled")))
        for t, fut in waiting.items():
            out[t] = await asyncio.shield(fut)
            stats.deduplicated += 1
        return out, hits

    async def _send(
        self, texts: list[str], stats: EmbedStats
    ) -> dict[str, np.ndarray | BaseException]:
        sent, counts = await asyncio.to_thread(self.provider.prepare_batch, texts)
        plan = batching.plan_batches(
            counts,
            max_inputs=self.provider.max_inputs_per_request,
            max_tokens=self.provider.max_tokens_per_request,
        )
        out: dict[str, np.ndarray | BaseException] = {}

        async def run(batch: list[int]) -> None:
            got = await self._embed_isolating(
                [sent[i] for i in batch], [counts[i] for i in batch], stats
            )
            for i, value in zip(batch, got, strict=True):
                out[texts[i]] = value

        await asyncio.gather(*(run(b) for b in plan))
        return out

    async def _embed_isolating(
        self, batch: list[str], counts: list[int], stats: EmbedStats
    ) -> list[np.ndarray | BaseException]:
        """One request; on a permanent error, split to find the poison text."""
        try:
            vectors = await self._request(batch, sum(counts), stats)
            return list(vectors)
        except errors.PermanentProviderError as exc:
            if len(batch) == 1:
                return [exc]
            # the key, the model or the account is wrong: no text is to blame, so splitting
            # would only multiply requests that cannot succeed (~2n for a batch of n)
            if isinstance(exc, errors.QuotaExceededError) or exc.status_code in (401, 403, 404):
                return [exc] * len(batch)
            mid = len(batch) // 2
            left, right = await asyncio.gather(
                self._embed_isolating(batch[:mid], counts[:mid], stats),
                self._embed_isolating(batch[mid:], counts[mid:], stats),
            )
            return left + right
        except errors.ProviderError as exc:
            return [exc] * len(batch)

    async def _request(self, batch: list[str], tokens: int, stats: EmbedStats) -> base.Vectors:
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, errors.RateLimitedError) else None
            return backoff(state.attempt_number, retry_after)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait,
            retry=retry_if_exception(should_retry),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    stats.retries += 1
                    metrics.RETRIES.labels(self.model).inc()
                async with self._semaphore:
                    await self.limiter.acquire(tokens)
                    started = time.perf_counter()
                    stats.requests += 1
                    try:
                        response = await self.provider.embed(batch)
                    except errors.RateLimitedError as exc:
                        stats.rate_limited += 1
                        metrics.REQUESTS.labels(self.model, "rate_limited").inc()
                        await self.limiter.block(exc.retry_after or BACKOFF_BASE)
                        self._log_failure(batch, tokens, attempt.retry_state.attempt_number, exc)
                        raise
                    except errors.ProviderError as exc:
                        metrics.REQUESTS.labels(self.model, "error").inc()
                        self._log_failure(batch, tokens, attempt.retry_state.attempt_number, exc)
                        raise
                elapsed = time.perf_counter() - started
                await self.limiter.observe(response.ratelimit, next_tokens=tokens)
                try:  # the provider validated already; a wrong vector must never pass us either
                    vectors = base.validate_vectors(
                        response.vectors, count=len(batch), dimensions=self.dimensions
                    )
                except errors.InvalidResponseError as exc:
                    metrics.REQUESTS.labels(self.model, "invalid").inc()
                    self._log_failure(batch, tokens, attempt.retry_state.attempt_number, exc)
                    raise
                stats.tokens += response.tokens
                metrics.REQUESTS.labels(self.model, "ok").inc()
                metrics.TOKENS.labels(self.model).inc(response.tokens)
                metrics.LATENCY.labels(self.model).observe(elapsed)
                logger.debug(
                    "batch embedded",
                    extra={
                        "inputs": len(batch),
                        "tokens": response.tokens,
                        "ms": round(elapsed * 1000, 1),
                        "attempt": attempt.retry_state.attempt_number,
                    },
                )
                return vectors
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_failure(
        self, batch: list[str], tokens: int, attempt: int, exc: errors.ProviderError
    ) -> None:
        logger.warning(
            "provider request failed",
            extra={
                "inputs": len(batch),
                "tokens": tokens,
                "attempt": attempt,
                "of": self._max_attempts,
                "error": str(exc),
            },
        )


async def open_service(settings: Settings) -> EmbeddingService:
    """Build the provider, the Redis link (if any), the cache, the shared budget, the query
    lane and the service over them (the lane takes its parts, not the service)."""
    provider = providers.create(settings)
    link: RedisLink | None = None
    url = settings.redis_url_value if settings.redis_enabled else None
    if url and url.strip().lower() == "embedded":
        try:
            # starts a redis-server and waits for its port: off the event loop
            url = await asyncio.to_thread(embedded.redis_url, settings.clipembed_home)
        except (OSError, RuntimeError, TimeoutError) as exc:
            logger.warning(
                "could not start an embedded Redis: running uncached", extra={"reason": str(exc)}
            )
            url = None
    if url:
        link = RedisLink(url)
        await link.ping()  # logs once if it is down; the link retries later by itself
    else:
        logger.info("no REDIS_URL: embeddings are not cached, rate limit is per process")
    cache = (
        EmbeddingCache(
            link,
            prefix=settings.redis_key_prefix,
            model=provider.model,
            dimensions=provider.dimensions,
            ttl_seconds=settings.cache_ttl_seconds,
        )
        if link is not None
        else None
    )
    rate_limited = provider.capabilities.rate_limited
    # One budget, queries first (issue 18): bulk work may use all of it while no query waits,
    # and yields to a waiting query. EMBEDDING_QUERY_RESERVE=0 turns the priority off.
    priority = rate_limited and settings.embedding_query_reserve > 0
    key = f"{settings.redis_key_prefix}ratelimit:{provider.model}"
    shared = ratelimit.GcraState()
    limiter = RateLimiter(
        requests_per_minute=settings.embedding_requests_per_minute,
        tokens_per_minute=settings.embedding_tokens_per_minute,
        link=link,
        key=key,
        enabled=rate_limited,
        # Hold only when the provider's request budget is exhausted: our own pacing already
        # keeps it near zero at full speed, and holding earlier (at "fewer left than requests
        # in flight") cost 8% of throughput under a binding limit (docs/benchmarks.md).
        reserve_requests=1,
        role="bulk" if priority else "any",
        state=shared,
    )
    queries = query_lane.QueryEmbedder(
        provider,
        cache=cache,
        dimensions=provider.dimensions,
        limiter=RateLimiter(
            requests_per_minute=settings.embedding_requests_per_minute,
            tokens_per_minute=settings.embedding_tokens_per_minute,
            link=link,
            key=key,
            enabled=rate_limited,
            role="query" if priority else "any",
            state=shared,
        ),
        timeout_seconds=settings.search_embed_timeout_ms / 1000,
        coalesce_seconds=settings.search_coalesce_ms / 1000,
    )
    return EmbeddingService(
        provider, settings=settings, limiter=limiter, cache=cache, link=link, queries=queries
    )
