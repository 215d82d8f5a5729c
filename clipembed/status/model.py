"""The status model: one function, :func:`collect`, read by ``clipembed status``, ``GET /status``
and the admin pages, so the three can never disagree.

Figures (all exact; "stale" means text changed since the vector was made, which the queue
triggers record the moment it happens):

- coverage per model in use: live, embedded, missing, stale, removed;
- backlog: pending, leased, retrying (with the highest attempt count), dead, oldest pending age;
- throughput and error rate over 1, 15 and 60 minutes (from the jobs' rollups);
- the last errors; the provider budget (configured, reserved for queries, used in the last
  minute, 429s in the last hour); tokens and dollars today and over 30 days, cache hit rate;
- workers (lost when silent for longer than their lease); the HNSW index (size, last build);
- 24 hours of history in 15-minute buckets for the charts.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from clipembed import metrics, spaces
from clipembed import settings as settings_mod
from clipembed.search import core
from clipembed.source import adoption
from clipembed.spaces import registry
from clipembed.store import batch_tables, clip_table, space_table, status_tables

WINDOWS = (1, 15, 60)  # minutes
#: the adopted table's foreign/missing vectors are a join over every clip: counted at most this
#: often per process (the console refreshes every few seconds)
MIRROR_TTL = 30.0  # seconds
_mirror_cache: dict[str, tuple[float, tuple[int, int]]] = {}
HISTORY_BUCKET = 15  # minutes per chart point (96 points over 24 h)
LAST_ERRORS = 10


async def collect(
    pool: AsyncConnectionPool,
    cfg: settings_mod.Settings,
    *,
    dimensions: int,
    history: bool = True,
) -> dict[str, Any]:
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    async with pool.connection() as conn:
        every_space = await spaces.all_spaces(conn)
        space = next(s for s in every_space if s.active)
        model = space.model_for(cfg)
        dimensions = space.dimensions
        column = (await (await conn.execute(clip_table.CLIP_COLUMN_DIMENSIONS)).fetchone() or (0,))[
            0
        ]
        counters = {
            r[0]: (int(r[1]), int(r[2]), int(r[3]))
            for r in await (await conn.execute(status_tables.COUNTERS)).fetchall()
        }
        live, removed, _ = counters.get("", (0, 0, 0))
        stale = (await (await conn.execute(status_tables.STALE)).fetchone() or (0,))[0]
        backlog_row = await (await conn.execute(status_tables.BACKLOG)).fetchone()
        errors = await (
            await conn.execute(status_tables.LAST_ERRORS, {"n": LAST_ERRORS})
        ).fetchall()
        windows = {}
        for minutes in WINDOWS:
            cur = await conn.execute(status_tables.WINDOW, {"model": model, "minutes": minutes})
            clips, failed, requests, limited, tokens = await cur.fetchone() or (0,) * 5
            windows[f"{minutes}m"] = {
                "clips_per_minute": round(clips / minutes, 2),
                "tokens_per_minute": round(tokens / minutes, 1),
                "requests": int(requests),
                "rate_limited": int(limited),
                "error_rate": round(failed / (clips + failed), 4) if clips + failed else 0.0,
                "failed": int(failed),
            }
        spend = {}
        for label, since in (("today", today), ("30d", now - dt.timedelta(days=30))):
            tokens, cost, hits, misses = await (
                await conn.execute(status_tables.SPEND, (since,))
            ).fetchone() or (0, 0.0, 0, 0)
            spend[label] = {
                "tokens": int(tokens),
                "usd": round(float(cost), 4),
                "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
            }
        workers = [_worker(r) for r in await (await conn.execute(status_tables.WORKERS)).fetchall()]
        index_row = await (await conn.execute(status_tables.INDEX, (space.index_name,))).fetchone()
        build = await (await conn.execute(status_tables.LAST_EVENT, ("index_build",))).fetchone()
        pace = await (await conn.execute(status_tables.LAST_EVENT, ("bulk_pace",))).fetchone()
        batch_rows = await (await conn.execute(batch_tables.SUMMARY)).fetchall()
        waiting = (await (await conn.execute(batch_tables.WAITING_CLIPS)).fetchone() or (0,))[0]
        points = []
        if history:
            cur = await conn.execute(status_tables.HISTORY, {"bucket": HISTORY_BUCKET})
            points = [
                {
                    "at": r[0].isoformat(),
                    "clips": int(r[1]),
                    "failed": int(r[2]),
                    "tokens": int(r[3]),
                    "pending": None if r[4] is None else int(r[4]),
                    "lag_seconds": None if r[5] is None else round(float(r[5]), 1),
                }
                for r in await cur.fetchall()
            ]
    leased, pending, retrying, max_attempts, oldest, dead = backlog_row or (0, 0, 0, 0, 0, 0)
    adopted = await _adopted(pool)
    models = {
        name: {
            "embedded": embedded,
            "current": name == model,
        }
        for name, (_, _, embedded) in counters.items()
        if name and embedded
    }
    # the counters follow the clips columns, which mirror the active space when it fits them;
    # otherwise the space's table is counted (exact, slower at millions of clips)
    if column == dimensions:
        embedded_current = counters.get(model, (0, 0, 0))[2]
    else:
        async with pool.connection() as conn:
            embedded_current = (await registry.coverage(conn, space)).embedded
    minute = windows["1m"]
    return {
        "generated_at": now.isoformat(),
        "model": model,
        "dimensions": dimensions,
        "space": space.describe(cfg),
        "spaces": [
            {**s.describe(cfg if s.configured else None), "state": s.state} for s in every_space
        ],
        "coverage": {
            "total": live + removed,
            "live": live,
            "embedded": embedded_current,
            "missing": max(0, live - embedded_current),
            "stale": int(stale),
            "removed": removed,
            "ratio": round(embedded_current / live, 6) if live else 1.0,
        },
        "models": models,
        "backlog": {
            "pending": int(pending),
            "leased": int(leased),
            "retrying": int(retrying),
            "retrying_max_attempts": int(max_attempts),
            "dead": int(dead),
            "oldest_pending_seconds": round(float(oldest), 1),
        },
        "throughput": windows,
        "last_errors": [
            {
                "state": r[0],
                "clip_id": str(r[1]),
                "title": r[2],
                "attempts": int(r[3]),
                "reason": (r[4] or "")[:500],
                "at": r[5].isoformat() if r[5] else None,
            }
            for r in errors
        ],
        "provider": {
            "name": cfg.embedding_provider,
            "requests_per_minute": cfg.embedding_requests_per_minute,
            "tokens_per_minute": cfg.embedding_tokens_per_minute,
            "query_reserve": cfg.embedding_query_reserve,
            "used_last_minute": {
                "requests": minute["requests"],
                "tokens": round(minute["tokens_per_minute"]),
            },
            "rate_limited_last_hour": windows["60m"]["rate_limited"],
        },
        "spend": spend,
        "workers": workers,
        "index": _index(index_row, build, embedded_current),
        "bulk_pace": _bulk_pace(pace),
        "batches": {
            "by_state": {r[0]: int(r[1]) for r in batch_rows},
            "clips_waiting": int(waiting),
            "tokens": sum(int(r[3]) for r in batch_rows),
            "cost_usd": round(sum(float(r[4]) for r in batch_rows), 4),
            "saving_usd": round(sum(float(r[5]) - float(r[4]) for r in batch_rows), 4),
        },
        "history": {"bucket_minutes": HISTORY_BUCKET, "points": points},
        "adopted": adopted,
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _bulk_pace(row: Any) -> dict[str, Any] | None:
    """The adaptive pace's last change (clipembed.bulk.adaptive_pace): ``clips_per_s`` 0 is
    full pace. None: bulk work never slowed for search (or history was pruned)."""
    if row is None:
        return None
    detail = row[1] or {}
    return {
        "at": row[0].isoformat(),
        "clips_per_s": detail.get("rate", 0),
        "search_ms": detail.get("search_ms"),
        "target_ms": detail.get("target_ms"),
        "reason": detail.get("reason", ""),
        "by": detail.get("by", ""),
    }


async def _adopted(pool: AsyncConnectionPool) -> dict[str, Any] | None:
    """The adopted table, and vectors in its embedding column that are not clipembed's
    (*foreign*: another writer's) or that clipembed holds but the column lost (*missing*)."""
    async with pool.connection() as conn:
        src = await adoption.load(conn)
        if src is None:
            return None
        key = src.mapping.qualified
        cached = _mirror_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < MIRROR_TTL:
            foreign, missing = cached[1]
        else:
            foreign, missing = await adoption.mirror_state(conn, src)
            _mirror_cache[key] = (time.monotonic(), (foreign, missing))
    return {
        "table": key,
        "hidden_when": list(src.hidden),
        "foreign_vectors": foreign,
        "mirror_missing": missing,
        "foreign_policy": src.mapping.foreign_vectors,
    }


def _worker(r: Any) -> dict[str, Any]:
    (
        name,
        host,
        pid,
        version,
        started,
        beat,
        lease,
        in_flight,
        embedded,
        failed,
        stopped,
        silent,
    ) = r
    state = "stopped" if stopped else ("lost" if float(silent) > float(lease) else "running")
    return {
        "name": name,
        "host": host,
        "pid": int(pid),
        "version": version,
        "started_at": started.isoformat(),
        "heartbeat_at": beat.isoformat(),
        "silent_seconds": round(float(silent), 1),
        "lease_seconds": float(lease),
        "in_flight": int(in_flight),
        "embedded": int(embedded),
        "failed": int(failed),
        "state": state,
    }


def export(s: dict[str, Any]) -> None:
    """Set the Prometheus gauges from a status (every figure of /status is also a metric)."""
    for state in ("live", "embedded", "missing", "stale", "removed"):
        metrics.STATUS_CLIPS.labels(state).set(s["coverage"][state])
    for state in ("pending", "leased", "retrying", "dead"):
        metrics.STATUS_BACKLOG.labels(state).set(s["backlog"][state])
    metrics.QUEUE_OLDEST.set(s["backlog"]["oldest_pending_seconds"])
    metrics.COVERAGE.set(s["coverage"]["ratio"])
    for window, t in s["throughput"].items():
        metrics.STATUS_THROUGHPUT.labels(window).set(t["clips_per_minute"])
        metrics.STATUS_ERROR_RATE.labels(window).set(t["error_rate"])
    for period, spend in s["spend"].items():
        metrics.STATUS_TOKENS.labels(period).set(spend["tokens"])
        metrics.STATUS_COST.labels(period).set(spend["usd"])
    states = {"running": 0, "lost": 0, "stopped": 0}
    for w in s["workers"]:
        states[w["state"]] = states.get(w["state"], 0) + 1
    for state, n in states.items():
        metrics.STATUS_WORKERS.labels(state).set(n)
    metrics.STATUS_INDEX_BYTES.set(s["index"]["size_bytes"])
    if s.get("adopted"):
        metrics.STATUS_CLIPS.labels("foreign").set(s["adopted"]["foreign_vectors"])
        metrics.STATUS_CLIPS.labels("mirror_missing").set(s["adopted"]["mirror_missing"])
    metrics.STATUS_BATCH_WAITING.set(s["batches"]["clips_waiting"])


def _index(row: Any, build: Any, rows: int) -> dict[str, Any]:
    """The space's index: its kind and search setting; an IVFFlat index's lists, and whether
    the table has outgrown them (``rows``: the vectors in it; rebuild with ``clipembed model
    backfill NAME --index rebuild``)."""
    kind = str(row[2]) if row else "hnsw"
    out: dict[str, Any] = {
        "type": kind,
        "exists": row is not None,
        "size_bytes": int(row[0]) if row else 0,
        "definition": row[1] if row else None,
        "last_build": build[0].isoformat() if build else None,
        "last_build_seconds": (build[1] or {}).get("seconds") if build else None,
    }
    if kind == "ivfflat":
        lists = space_table.index_option(row[3], "lists", space_table.IVFFLAT_DEFAULT_LISTS)
        out |= {
            "lists": lists,
            "probes": core.DEFAULT_PROBES,
            "hybrid_probes": core.HYBRID_PROBES,
            "outgrown": space_table.ivfflat_stale(lists, rows),
        }
    else:
        out["ef_search"] = core.DEFAULT_EF_SEARCH
    return out
