"""``backfill --dry-run``: clips, tokens, requests, cost and time, without sending or writing.

Clips are grouped as the real run groups them; texts already in the cache cost nothing (a
read-only cache lookup is not a provider call); each group's misses are split into requests by
the provider's input and token caps, as the service would.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from clipembed.bulk import pipeline
from clipembed.bulk.report import Summary
from clipembed.runtime import Runtime


async def dry_run(
    runtime: Runtime,
    summary: Summary,
    *,
    force: bool,
    limit: int | None,
    batch_size: int,
    stop: asyncio.Event,
    started: float,
) -> Summary:
    svc = runtime.require_service()
    cfg = runtime.require_service().settings  # the space's model: its prices and limits
    provider = svc.provider
    count = 0
    requests = 0
    batch: list[pipeline.Pending] = []
    counts = pipeline.ScanCounts()

    async def estimate(items: list[pipeline.Pending]) -> int:
        prepared = list(dict.fromkeys(svc.prepare(p.text) for p in items))
        found: list[Any] = [None] * len(prepared)
        if svc.cache is not None:
            found = await svc.cache.get_many(prepared)
        misses = [t for t, v in zip(prepared, found, strict=True) if v is None]
        summary.embedding.cache_hits += len(prepared) - len(misses)
        summary.embedding.cache_misses += len(misses)
        tokens = sum(svc.count_tokens(t) for t in misses)
        summary.embedding.tokens += tokens
        if not misses:
            return 0
        per_request = max(1, min(batch_size, provider.max_inputs_per_request))
        return max(
            math.ceil(len(misses) / per_request),
            math.ceil(tokens / max(1, provider.max_tokens_per_request)),
        )

    async for item in pipeline.scan(
        runtime.pool,
        space=runtime.require_space(),
        model=svc.model,
        dimensions=svc.dimensions,
        force=force,
        counts=counts,
        stop=stop,
    ):
        if limit is not None and count >= limit:
            break
        count += 1
        batch.append(item)
        if len(batch) >= batch_size:
            requests += await estimate(batch)
            batch = []
    if batch:
        requests += await estimate(batch)
    summary.total, summary.skipped = counts.total, counts.skipped
    summary.would_embed = count
    summary.embedding.requests = requests
    summary.estimated_cost_usd = summary.embedding.tokens * cfg.price_per_million_tokens / 1_000_000
    if provider.capabilities.rate_limited:  # else its own speed decides: not estimated
        minutes = max(
            requests / cfg.embedding_requests_per_minute,
            summary.embedding.tokens / cfg.embedding_tokens_per_minute,
        )
        summary.estimated_seconds = minutes * 60
    summary.duration = time.monotonic() - started
    return summary
