"""Prometheus metrics of the embedding pipeline (served at ``GET /metrics`` by ``clipembed serve``).

Defined once per process on the default registry; every service instance updates the same
series, labelled by model, so many services (as in the tests) never re-register.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TEXTS = Counter(
    "clipembed_texts_total", "Texts embedded, by where the vector came from.", ["model", "source"]
)
CACHE_LOOKUPS = Counter(
    "clipembed_cache_lookups_total",
    "Distinct texts looked up in the Redis cache, by result (hit or miss).",
    ["model", "result"],
)
REQUESTS = Counter(
    "clipembed_provider_requests_total",
    "Provider requests, by outcome (ok, rate_limited, error, invalid).",
    ["model", "outcome"],
)
TOKENS = Counter("clipembed_provider_tokens_total", "Input tokens sent to the provider.", ["model"])
RETRIES = Counter("clipembed_provider_retries_total", "Provider requests retried.", ["model"])
LATENCY = Histogram(
    "clipembed_provider_request_seconds",
    "Provider request latency.",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("clipembed_queue_pending", "Clips waiting in the embedding queue.")
QUEUE_OLDEST = Gauge("clipembed_queue_oldest_seconds", "Age of the oldest pending queue item.")
DEAD_LETTERS = Gauge("clipembed_queue_dead_letters", "Items that exhausted their attempts.")
COVERAGE = Gauge("clipembed_coverage_ratio", "Fraction of live clips with a current embedding.")
SEARCH_DEGRADED = Counter(
    "clipembed_search_degraded_total",
    "Searches answered without a branch (the query embedding missed its deadline or failed).",
    ["branch", "reason"],
)
SEARCH_COMPLETED = Counter(
    "clipembed_search_completed_total",
    "Clips the vector index missed that hybrid search ranked anyway: the keyword branch found"
    " them and their exact similarity placed them in the vector ranking's window.",
)
QUERY_EMBED_BATCH = Histogram(
    "clipembed_query_embed_batch_size",
    "Queries embedded per provider request by the query lane (coalescing).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

# --- the HTTP server's defences (docs/security.md) --------------------------------------------
AUTH_FAILURES = Counter(
    "clipembed_auth_failures_total",
    "Failed sign-ins and wrong Bearer tokens, by kind (signin, bearer) and answer "
    "(refused: 401, throttled: 429).",
    ["kind", "answer"],
)
SEARCH_SHED = Counter(
    "clipembed_search_shed_total",
    "Searches answered 503 'overloaded' at once: more in flight than complete within the deadline.",
)
SEARCH_REFUSED = Counter(
    "clipembed_search_refused_total",
    "Searches refused with 429 by a per-client limit (requests per second, query embeddings).",
    ["limit"],
)
BODY_TOO_LARGE = Counter(
    "clipembed_http_body_too_large_total", "Requests refused with 413 (CLIPEMBED_MAX_BODY_BYTES)."
)

# --- the status model's figures, refreshed at each scrape of /metrics (status.model.export) ---
STATUS_CLIPS = Gauge(
    "clipembed_status_clips", "Clips by state for the configured model.", ["state"]
)
STATUS_BACKLOG = Gauge("clipembed_status_backlog", "Queue items by state.", ["state"])
STATUS_THROUGHPUT = Gauge(
    "clipembed_status_clips_per_minute", "Clips embedded per minute over a window.", ["window"]
)
STATUS_ERROR_RATE = Gauge("clipembed_status_error_rate", "Failed / attempted clips.", ["window"])
STATUS_TOKENS = Gauge("clipembed_status_tokens", "Tokens embedded over a period.", ["period"])
STATUS_COST = Gauge("clipembed_status_cost_usd", "Estimated dollars over a period.", ["period"])
STATUS_WORKERS = Gauge("clipembed_status_workers", "Workers by state.", ["state"])
STATUS_INDEX_BYTES = Gauge("clipembed_status_index_bytes", "Size of the HNSW index.")
STATUS_BATCH_WAITING = Gauge("clipembed_status_batch_clips_waiting", "Clips waiting in batches.")
