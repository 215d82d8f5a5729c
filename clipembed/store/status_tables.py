"""The status tables: counters, rollups, workers, events (read by the status model, written by
the jobs)."""

from __future__ import annotations

#: Per model: live, removed and embedded clips ('' holds the totals), summed over the slots.
COUNTERS = """
SELECT model, sum(live)::bigint, sum(removed)::bigint, sum(embedded)::bigint
FROM clipembed_counters GROUP BY model
"""

#: Clips whose text changed after they got a vector: the enqueue trigger flagged them.
STALE = "SELECT count(*) FROM embedding_queue WHERE had_vector"

BACKLOG = """
SELECT count(*) FILTER (WHERE leased_until >= now()) AS leased,
       count(*) FILTER (WHERE (leased_until IS NULL OR leased_until < now())
                          AND last_error IS NULL AND in_batch IS NULL) AS pending,
       count(*) FILTER (WHERE (leased_until IS NULL OR leased_until < now())
                          AND last_error IS NOT NULL) AS retrying,
       coalesce(max(attempts) FILTER (WHERE last_error IS NOT NULL), 0) AS max_attempts,
       coalesce(extract(epoch FROM now() - min(enqueued_at)
                FILTER (WHERE (leased_until IS NULL OR leased_until < now())
                        AND in_batch IS NULL)), 0) AS oldest_seconds,
       (SELECT count(*) FROM embedding_dead_letters) AS dead
FROM embedding_queue
"""

#: The most recent errors, retrying and dead, with the clip's title.
LAST_ERRORS = """
SELECT * FROM (
    SELECT 'retrying' AS state, q.clip_id, c.title, q.attempts, q.last_error,
           q.next_attempt_at AS at
    FROM (SELECT * FROM embedding_queue WHERE last_error IS NOT NULL
          ORDER BY next_attempt_at DESC LIMIT %(n)s) q JOIN clips c ON c.id = q.clip_id
    UNION ALL
    SELECT 'dead', d.clip_id, c.title, d.attempts, d.last_error, d.failed_at
    FROM (SELECT * FROM embedding_dead_letters ORDER BY failed_at DESC LIMIT %(n)s) d
    JOIN clips c ON c.id = d.clip_id
) e ORDER BY at DESC LIMIT %(n)s
"""

#: Totals over the last %(minutes)s minutes, all sources, for one model.
WINDOW = """
SELECT coalesce(sum(clips), 0)::bigint, coalesce(sum(failed), 0)::bigint,
       coalesce(sum(requests), 0)::bigint, coalesce(sum(rate_limited), 0)::bigint,
       coalesce(sum(tokens), 0)::bigint
FROM clipembed_rollups
WHERE model = %(model)s AND minute >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
"""

#: Tokens, dollars and cache lookups since a time (today, 30 days), all models.
SPEND = """
SELECT coalesce(sum(tokens), 0)::bigint, coalesce(sum(cost_usd), 0)::float8,
       coalesce(sum(cache_hits), 0)::bigint, coalesce(sum(cache_misses), 0)::bigint
FROM clipembed_rollups WHERE minute >= %s
"""

#: Per bucket of the last 24 h: clips, failures (rollups) and backlog, lag (queue samples).
HISTORY = """
WITH buckets AS (
    SELECT generate_series(
        date_bin(make_interval(mins => %(bucket)s), now() - interval '24 hours', timestamptz 'epoch'),
        now(), make_interval(mins => %(bucket)s)) AS at
), r AS (
    SELECT date_bin(make_interval(mins => %(bucket)s), minute, timestamptz 'epoch') AS at,
           sum(clips) AS clips, sum(failed) AS failed, sum(tokens) AS tokens
    FROM clipembed_rollups WHERE minute >= now() - interval '24 hours' GROUP BY 1
), s AS (
    SELECT date_bin(make_interval(mins => %(bucket)s), minute, timestamptz 'epoch') AS at,
           max(pending) AS pending, max(oldest_seconds) AS lag
    FROM clipembed_queue_samples WHERE minute >= now() - interval '24 hours' GROUP BY 1
)
SELECT b.at, coalesce(r.clips, 0)::bigint, coalesce(r.failed, 0)::bigint,
       coalesce(r.tokens, 0)::bigint, s.pending, s.lag
FROM buckets b LEFT JOIN r USING (at) LEFT JOIN s USING (at) ORDER BY b.at
"""

WORKERS = """
SELECT name, host, pid, version, started_at, heartbeat_at, lease_seconds, in_flight, embedded,
       failed, stopped_at, extract(epoch FROM now() - heartbeat_at) AS silent_seconds
FROM clipembed_workers
WHERE stopped_at IS NULL OR stopped_at > now() - interval '1 day'
ORDER BY stopped_at IS NOT NULL, started_at DESC
"""

INDEX = """
SELECT pg_relation_size(i.indexrelid), pg_get_indexdef(i.indexrelid), am.amname, c.reloptions
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
WHERE c.relname = %s
"""

LAST_EVENT = "SELECT at, detail FROM clipembed_events WHERE kind = %s ORDER BY at DESC LIMIT 1"

RECORD = """
INSERT INTO clipembed_rollups AS r (minute, model, source, clips, failed, requests, rate_limited,
    tokens, cache_hits, cache_misses, cost_usd)
VALUES (date_trunc('minute', now()), %(model)s, %(source)s, %(clips)s, %(failed)s, %(requests)s,
    %(rate_limited)s, %(tokens)s, %(cache_hits)s, %(cache_misses)s, %(cost_usd)s)
ON CONFLICT (minute, model, source) DO UPDATE SET
    clips = r.clips + EXCLUDED.clips, failed = r.failed + EXCLUDED.failed,
    requests = r.requests + EXCLUDED.requests, rate_limited = r.rate_limited + EXCLUDED.rate_limited,
    tokens = r.tokens + EXCLUDED.tokens, cache_hits = r.cache_hits + EXCLUDED.cache_hits,
    cache_misses = r.cache_misses + EXCLUDED.cache_misses, cost_usd = r.cost_usd + EXCLUDED.cost_usd
"""

SAMPLE_QUEUE = """
INSERT INTO clipembed_queue_samples (minute, pending, oldest_seconds, dead_letters)
VALUES (date_trunc('minute', now()), %s, %s, %s)
ON CONFLICT (minute) DO UPDATE SET pending = EXCLUDED.pending,
    oldest_seconds = EXCLUDED.oldest_seconds, dead_letters = EXCLUDED.dead_letters
"""

WORKER_BEAT = """
INSERT INTO clipembed_workers AS w (name, host, pid, version, started_at, heartbeat_at,
    lease_seconds, in_flight, embedded, failed)
VALUES (%(name)s, %(host)s, %(pid)s, %(version)s, %(started_at)s, now(), %(lease)s,
    %(in_flight)s, %(embedded)s, %(failed)s)
ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,
    version = EXCLUDED.version, started_at = EXCLUDED.started_at, heartbeat_at = now(),
    lease_seconds = EXCLUDED.lease_seconds, in_flight = EXCLUDED.in_flight,
    embedded = EXCLUDED.embedded, failed = EXCLUDED.failed, stopped_at = NULL
"""

WORKER_STOPPED = "UPDATE clipembed_workers SET stopped_at = now(), in_flight = 0 WHERE name = %s"

EVENT = "INSERT INTO clipembed_events (kind, detail) VALUES (%s, %s)"

PRUNE = [
    "DELETE FROM clipembed_rollups WHERE minute < now() - make_interval(days => %s)",
    "DELETE FROM clipembed_queue_samples WHERE minute < now() - make_interval(days => %s)",
    "DELETE FROM clipembed_events WHERE at < now() - make_interval(days => %s)",
    "DELETE FROM clipembed_workers WHERE stopped_at < now() - make_interval(days => %s)",
    "DELETE FROM clipembed_search_health WHERE reported_at < now() - make_interval(days => %s)",
]

# ---------------------------------------------------------------- search servers' health

#: A search server's last second (clipembed.api.search_report): one row per server process.
REPORT_SEARCH = """
INSERT INTO clipembed_search_health AS h (server, reported_at, database_ms, requests)
VALUES (%s, now(), %s, %s)
ON CONFLICT (server) DO UPDATE
    SET reported_at = EXCLUDED.reported_at, database_ms = EXCLUDED.database_ms,
        requests = EXCLUDED.requests
"""
FORGET_SEARCH_SERVER = "DELETE FROM clipembed_search_health WHERE server = %s"

#: How much search suffers now, in milliseconds (bulk work's pace follows it): the older of the
#: oldest search statement still running (``%s``: the search pool's application_name) and the
#: worst search server's mean database time per request over its last reported second.
SEARCH_STRAIN = """
SELECT greatest(
    (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)) * 1000, 0)
     FROM pg_stat_activity
     WHERE application_name = %s AND state = 'active' AND pid <> pg_backend_pid()),
    (SELECT coalesce(max(database_ms), 0) FROM clipembed_search_health
     WHERE reported_at > now() - interval '3 seconds')
)
"""
