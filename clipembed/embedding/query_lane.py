"""The query lane: search's query embeddings, apart from bulk work, coalesced, with a deadline.

A search waiting behind a backfill's batch (for the concurrency semaphore, for a token budget
the batch holds, through three 30-second retries) is an outage for its user. So query texts do
not go through :meth:`EmbeddingService.embed
<clipembed.embedding.service.EmbeddingService.embed>`:

- **coalescing**: queries arriving within ``SEARCH_COALESCE_MS`` of each other go out as one
  provider request, or one local encode. One request at a time waits for the rate budget, and
  every query arriving meanwhile joins it (up to what the provider accepts in one request), so
  the budget's pace sets the batch size, not a queue of small requests the lane made itself.
  Identical texts share one future;
- **priority, not partition** (issue 18): one budget for the provider; the lane's limiter is a
  ``query`` limiter, the service's a ``bulk`` one, so bulk work (backfills, workers) yields
  whenever a query waits, and uses the whole budget when none does;
- **one attempt within a deadline** (``SEARCH_EMBED_TIMEOUT_MS``): a miss, a 429, a 5xx or a
  hang raises :class:`~clipembed.errors.QueryEmbeddingUnavailable` with a message safe to show
  anyone; the search degrades to its keyword branch. A request still in flight when a caller
  gives up goes on, and its vector is cached for the next identical query.

The lane takes what it uses (the provider, the cache, the dimensions, its limiter), not the
service: :func:`clipembed.embedding.service.open_service` builds both over one provider, one
cache (same keys, same preparation, :func:`clipembed.clips.sanitize`: a text embedded by a
backfill is a hit here) and one rate budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from clipembed import clips, errors, metrics
from clipembed.embedding.cache import EmbeddingCache
from clipembed.embedding.providers import base
from clipembed.embedding.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

MAX_BATCH = 64  # queries per local encode: 64 short texts take ~0.2 s on 2 cores
MAX_QUERY_TOKENS = 512  # a query is at most 500 characters: never more tokens than that


class QueryEmbedder:
    def __init__(
        self,
        provider: base.EmbeddingProvider,
        *,
        cache: EmbeddingCache | None,
        dimensions: int,
        limiter: RateLimiter,
        timeout_seconds: float,
        coalesce_seconds: float,
        max_batch: int | None = None,
    ) -> None:
        self.provider = provider
        self.cache = cache
        self.dimensions = dimensions
        self.limiter = limiter
        self.timeout = timeout_seconds
        self.coalesce = coalesce_seconds
        remote = provider.capabilities.parallel_requests
        # a remote provider takes as many queries per request as it accepts (inputs and tokens);
        # a local model encodes at most MAX_BATCH at a time (its latency grows with the batch)
        accepted = min(
            provider.max_inputs_per_request,
            max(1, provider.max_tokens_per_request // MAX_QUERY_TOKENS),
        )
        if max_batch is None:  # the provider's own bound (remote), or a local encode's
            max_batch = accepted if remote else MAX_BATCH
        self.max_batch = max(1, min(max_batch, accepted))
        self._pending: dict[str, asyncio.Future[np.ndarray]] = {}
        self._flush_scheduled: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A local model encodes one batch at a time (it uses every core): while one is running,
        # queries accumulate into the next batch instead of queueing as many small ones.
        self._max_in_flight = 8 if remote else 1
        self._in_flight = 0
        #: a request is waiting for the rate budget: new queries join it rather than start one
        self._acquiring = False
        self.requests = 0
        self.texts = 0

    def __repr__(self) -> str:
        return f"QueryEmbedder(timeout={self.timeout}s, coalesce={self.coalesce * 1000:.0f}ms)"

    async def embed(
        self, text: str, *, admit: Callable[[], Awaitable[None]] | None = None
    ) -> np.ndarray:
        """The vector of one query text, within the deadline, or QueryEmbeddingUnavailable.

        ``admit`` is awaited only when the text needs a new provider request (neither cached
        nor already on its way for another caller); whatever it raises is the caller's answer
        (the HTTP search's per-client budget, :mod:`clipembed.api.limits`).
        """
        prepared = clips.sanitize(text)  # as the service prepares it: one cache key per text
        if not prepared:
            raise errors.PermanentProviderError("empty text: nothing to embed")
        deadline = time.monotonic() + self.timeout
        if self.cache is not None:
            (cached,) = await self.cache.get_many([prepared])
            if cached is not None:
                return cached
        if admit is not None and prepared not in self._pending:
            await admit()
        future = self._pending.get(prepared)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[prepared] = future
            self._schedule()
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            raise errors.QueryEmbeddingUnavailable(
                f"the query embedding took longer than {self.timeout * 1000:.0f} ms"
            ) from None

    # --- coalescing ---------------------------------------------------------------------------
    def _schedule(self) -> None:
        if self._in_flight >= self._max_in_flight or self._acquiring:
            return  # the request in flight (or waiting for its slot) takes what gathers
        if len(self._pending) >= self.max_batch:
            self._flush_now()
        elif self._flush_scheduled is None:
            loop = asyncio.get_running_loop()
            self._flush_scheduled = loop.call_later(self.coalesce, self._flush_now)

    def _flush_now(self) -> None:
        if self._flush_scheduled is not None:
            self._flush_scheduled.cancel()
            self._flush_scheduled = None
        if not self._pending or self._acquiring:
            return
        self._in_flight += 1
        self._acquiring = True
        task = asyncio.get_running_loop().create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        try:
            budget_error: errors.QueryEmbeddingUnavailable | None = None
            prepared: dict[str, str] = {}
            try:
                # The rate budget first; queries arriving meanwhile join this request. The
                # tokens are those pending now (queries that join later are a few hundred
                # tokens at most: a query is capped at 500 characters). Without a budget (a
                # local model) nothing is counted: the texts are prepared once, for the encode.
                if self.limiter.enabled:
                    waiting = list(self._pending)[: self.max_batch]
                    sent, counts = self.provider.prepare_batch(waiting)
                    prepared = dict(zip(waiting, sent, strict=True))
                    async with asyncio.timeout(self.timeout):
                        await self.limiter.acquire(sum(counts))
            except TimeoutError:
                budget_error = errors.QueryEmbeddingUnavailable(
                    "the embedding provider's rate budget is exhausted"
                )
            finally:
                self._acquiring = False
            batch = dict(list(self._pending.items())[: self.max_batch])
            for text in batch:
                del self._pending[text]
            if self._pending:
                self._schedule()  # more than one request's worth: the next one waits its turn
            if budget_error is not None:
                logger.warning(
                    "query embedding failed", extra={"queries": len(batch), "reason": "budget"}
                )
                self._fail(batch, budget_error)
                return
            await self._send_batch(batch, prepared)
        finally:
            self._in_flight -= 1
            if self._pending and self._flush_scheduled is None:
                self._flush_now()  # these waited for the request that just ended: go now

    @staticmethod
    def _fail(
        batch: dict[str, asyncio.Future[np.ndarray]], failure: errors.QueryEmbeddingUnavailable
    ) -> None:
        for future in batch.values():
            if not future.done():
                future.set_exception(failure)
            if not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning later

    async def _send_batch(
        self, batch: dict[str, asyncio.Future[np.ndarray]], prepared: dict[str, str]
    ) -> None:
        """``prepared``: the texts already cut to the model's limit while the budget was taken
        (one tokenizer pass per text, not two); the queries that joined since are cut here."""
        texts = list(batch)
        provider = self.provider
        try:
            async with asyncio.timeout(self.timeout):
                late = [t for t in texts if t not in prepared]
                if late:
                    prepared.update(zip(late, provider.prepare_batch(late)[0], strict=True))
                sent = [prepared[t] for t in texts]
                self.requests += 1
                self.texts += len(texts)
                metrics.QUERY_EMBED_BATCH.observe(len(texts))
                response = await provider.embed(sent)
                vectors = base.validate_vectors(
                    response.vectors, count=len(texts), dimensions=self.dimensions
                )
        except (errors.ProviderError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            logger.warning(
                "query embedding failed",
                extra={"queries": len(texts), "reason": reason, "detail": str(exc)[:200]},
            )
            self._fail(
                batch,
                errors.QueryEmbeddingUnavailable(
                    "the embedding provider did not answer in time"
                    if reason == "timeout"
                    else "the embedding provider is unavailable"
                ),
            )
            return
        except BaseException as exc:  # cancelled at shutdown, or a bug: fail the waiters
            for future in batch.values():
                if not future.done():
                    future.set_exception(errors.QueryEmbeddingUnavailable("search is stopping"))
                if not future.cancelled():
                    future.exception()
            if not isinstance(exc, Exception):
                raise
            logger.exception("query embedding failed unexpectedly")
            return
        for vector, future in zip(vectors, batch.values(), strict=True):
            if not future.done():
                future.set_result(vector)
        if self.cache is not None:
            await self.cache.set_many(list(zip(texts, vectors, strict=True)))

    async def aclose(self) -> None:
        if self._flush_scheduled is not None:
            self._flush_scheduled.cancel()
            self._flush_scheduled = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
