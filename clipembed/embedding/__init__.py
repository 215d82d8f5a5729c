"""Turning texts into vectors: the embedding service and everything it stands on.

- :mod:`.service` — :class:`~.service.EmbeddingService` (bulk work: cache, dedupe, batch, rate
  limit, retry, validate) and :func:`~.service.open_service`, which builds it together with
  search's :mod:`.query_lane` over one provider, one cache and one rate budget;
- :mod:`.query_lane` — query embeddings: coalesced, first on the budget, within a deadline;
- :mod:`.cache` — the Redis link and the embedding cache; :mod:`.ratelimit` — the provider's
  requests- and tokens-per-minute budget (GCRA, shared through Redis); :mod:`.batching` — pure;
- :mod:`.providers` — the backends and the capabilities each declares (remote or local,
  rate-limited, Batch API, price, dimension checks). Nothing outside that package compares a
  provider's name.

Nothing here knows about clips tables, spaces or search: callers pass texts, get vectors.
"""
