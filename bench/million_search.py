"""The search phases of ``bench.million``: latency per mode, recall, binary quantization, HTTP.

Every function takes a database that holds the clips and a promoted space; see bench/million.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg import sql

from bench import common
from clipembed import runtime, settings, spaces
from clipembed.admin import auth
from clipembed.search import clips as clip_search
from clipembed.search import core, ranking
from clipembed.testing.fakeopenai import vector_for

MODES: tuple[core.Mode, ...] = ("keyword", "semantic", "hybrid")


def filter_cases(url: str) -> list[tuple[str, clip_search.Filters]]:
    """Unfiltered, then by a popular and a mid-frequency game and broadcaster."""
    games, broadcasters = common_values(url, "game_name"), common_values(url, "broadcaster_name")
    cases: list[tuple[str, clip_search.Filters]] = [("unfiltered", clip_search.Filters())]
    cases += [(f"game={g}", clip_search.Filters(game=g)) for g in games]
    cases += [(f"broadcaster={b}", clip_search.Filters(broadcaster=b)) for b in broadcasters]
    return cases


async def timings(
    cfg: settings.Settings, texts: list[str], filtered: Sequence[tuple[str, clip_search.Filters]]
) -> dict[str, Any]:
    """p50/p95 per mode in the active space, every query embedding cached first; then hybrid
    under each of ``filtered``."""
    out: dict[str, Any] = {}
    async with runtime.open_runtime(cfg, search=True) as rt:
        filters = clip_search.Filters()
        # warm: the query embeddings go to the cache, and both branches' pages and statistics
        # are read once (a first pass in semantic mode left hybrid, measured first, to read the
        # postings from the OS cache; "hybrid unfiltered" below repeats it warm)
        for text in texts:
            await clip_search.search_detailed(
                rt.reader, rt.service_for, text, params=core.Params(mode="hybrid"),
                filters=filters,
            )  # fmt: skip
        for mode in MODES:
            times = []
            for text in texts:
                t = time.perf_counter()
                outcome = await clip_search.search_detailed(
                    rt.reader, rt.service_for, text, params=core.Params(mode=mode, limit=20),
                    filters=filters,
                )  # fmt: skip
                times.append((time.perf_counter() - t) * 1000)
                if outcome.degraded:
                    raise RuntimeError(f"{mode} search degraded {outcome.degraded}")
            out[mode] = {"queries": len(times), **common.percentiles(times)}
        for label, case in filtered:
            times = []
            for text in texts:
                t = time.perf_counter()
                await clip_search.search_detailed(
                    rt.reader, rt.service_for, text, params=core.Params(limit=20), filters=case
                )
                times.append((time.perf_counter() - t) * 1000)
            out[f"hybrid {label}"] = {"queries": len(times), **common.percentiles(times)}
    return out


def common_values(url: str, column: str) -> list[str]:
    """A popular and a mid-frequency value of ``column`` (a filter that keeps ~1 % and less)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {column}, count(*) FROM clips WHERE {column} IS NOT NULL "
            f"GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    return [rows[0][0], rows[len(rows) // 2][0]]


#: ann-benchmarks' tolerance: a neighbour as near as the k-th true one (within this) counts
TIE_EPSILON = 1e-3


def recall_with_ties(exact: Sequence[tuple[Any, float]], ann: Sequence[tuple[Any, float]]) -> float:
    """ann-benchmarks' recall: the share of the k returned that are no farther than the k-th
    true neighbour (+ TIE_EPSILON). Where many clips lie at the same distance (identical
    titles), which of them the exact scan lists is arbitrary, and set overlap counts an equally
    near neighbour as a miss; this counts it as found. (id, cosine similarity) pairs."""
    if not exact:
        return 1.0
    threshold = min(s for _, s in exact) - TIE_EPSILON  # similarity: nearer is larger
    found = sum(1 for _, s in ann[: len(exact)] if s >= threshold)
    return found / len(exact)


#: ann-benchmarks' "epsilon" metric: a neighbour within (1 + EPSILON) of the k-th true distance
EPSILON = 0.01


def recall_within(
    exact: Sequence[tuple[Any, float]], ann: Sequence[tuple[Any, float]], epsilon: float = EPSILON
) -> float:
    """ann-benchmarks' epsilon recall: the share of the k returned whose cosine *distance* is
    at most (1 + epsilon) times the k-th true neighbour's. Where thousands of clips lie within
    a hair of the 10th neighbour (titles made from the same words, clips of one stream), which
    ten of them the scan lists is arbitrary; this tells "missed a near neighbour" from "listed
    an equally near one". Reported beside the strict count, never instead of it."""
    if not exact:
        return 1.0
    limit = (1 - min(s for _, s in exact)) * (1 + epsilon)  # similarity -> distance
    found = sum(1 for _, s in ann[: len(exact)] if 1 - s <= limit)
    return found / len(exact)


def near_ties(exact: Sequence[tuple[Any, float]], ann: Sequence[tuple[Any, float]]) -> float:
    """How far below the 10th true similarity the ANN's 10th lies (0: as near)."""
    if not exact or not ann:
        return 0.0
    return max(0.0, min(s for _, s in exact) - min(s for _, s in ann[: len(exact)]))


#: The true top 10 by a full scan: the product's own statement cannot be reused with index scans
#: turned off, because it turns sequential scans off for itself (``queries.SET_EF_SEARCH``), and
#: with both off PostgreSQL took the HNSW index anyway (a run reported recall 1.0 against itself).
EXACT = sql.SQL(
    """
SELECT d.id, 1 - (e.embedding <=> %(v)s::{vtype}) AS similarity
FROM {vectors} e JOIN {table} d ON d.id = e.clip_id
WHERE ({base}) AND ({where})
ORDER BY e.embedding <=> %(v)s::{vtype}, d.id
LIMIT 10
"""
)


async def exact_top(
    conn: psycopg.AsyncConnection[Any],
    corpus: core.Corpus,
    v: np.ndarray,
    filters: clip_search.Filters,
) -> list[tuple[Any, float]]:
    assert corpus.vectors is not None
    where = filters.where()
    stmt = EXACT.format(
        vtype=sql.SQL(corpus.vector_type),
        vectors=sql.Identifier(corpus.vectors),
        table=sql.Identifier(corpus.table),
        base=sql.SQL(corpus.base_filter),
        where=where[0],
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off")
        await conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
        cur = await conn.execute(stmt, {"v": np.asarray(v, dtype=np.float32), **where[1]})
        return [(r[0], float(r[1])) for r in await cur.fetchall()]


@contextlib.asynccontextmanager
async def opened(
    url: str, space_name: str
) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], spaces.Space, core.Corpus]]:
    """A connection for recall, the space and its corpus. prepare_threshold None: the ANN and
    the exact statements can have the same text, and a prepared statement's generic plan (made
    with index scans on) would answer the "exact" one from the index too."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
    async with conn:
        await register_vector_async(conn)
        await conn.execute("SET search_path = clipembed, public")
        space = await spaces.by_name(conn, space_name)
        yield conn, space, clip_search.corpus_for(space)


async def recall(
    url: str, space_name: str, texts: list[str], dims: int, vectors: str, ef_search: int
) -> dict[str, Any]:
    """recall@10 of the product's vector branch against a full scan, unfiltered and filtered
    by game and by broadcaster. The branch is asked for what a search asks it for (the fusion
    window, ``ranking.branch_depth``: 200), and its first 10 are scored, as a semantic search's
    first page: with ``relaxed_order`` a scan asked for 10 returns the first 10 it meets, not
    the nearest 10 of what it visited (0.83 against 0.97 on the same queries). ``recall_at_10_n10``
    keeps the branch asked for 10 alone. ``recall_at_10_hybrid_vector_ranking`` scores the
    ranking hybrid search fuses: the same list completed with the keyword branch's candidates
    (``ranking.completed``)."""
    cases = filter_cases(url)
    out: dict[str, Any] = {"queries": len(texts), "ef_search": ef_search}
    async with opened(url, space_name) as (conn, _, corpus):
        # semantic mode's branch, and hybrid's (its IVFFlat probes differ: core.probes_for)
        params = core.Params(mode="semantic", ef_search=ef_search)
        hybrid = core.Params(ef_search=ef_search)
        depth = ranking.branch_depth(hybrid)
        for label, filters in cases:
            hits, tied, within, gaps, ann_ms, exact_ms, first10 = [], [], [], [], [], [], []
            completed: list[float] = []
            completed_ties: list[float] = []
            completed_within: list[float] = []
            for text in texts:
                v = vector_for(text, dims, vectors)

                async def branch(p: core.Params, n: int) -> list[Any]:
                    return await core.semantic_branch(
                        conn, corpus, v, filters.where(), p, n,  # noqa: B023 (awaited here)
                        selective=filters.selective, keys=filters.keys(),  # noqa: B023
                    )  # fmt: skip

                t = time.perf_counter()
                ann = await branch(params, depth)
                ann_ms.append((time.perf_counter() - t) * 1000)
                # hybrid's vector ranking: the same list with the keyword branch's candidates
                # it missed taken in (ranking.completed), as a hybrid search fuses it
                keyword = await core.keyword_branch(
                    conn, corpus, text, filters.where(), hybrid, depth,
                    filter_first=filters.selective,
                )  # fmt: skip
                same = core.probes_for(hybrid) == core.probes_for(params)
                hybrid_ann = ann if same else await branch(hybrid, depth)
                full = await ranking.completed(conn, corpus, v, keyword, hybrid_ann, depth)
                ann = ann[:10]
                alone = await branch(params, 10)
                t = time.perf_counter()
                exact = await exact_top(conn, corpus, v, filters)
                exact_ms.append((time.perf_counter() - t) * 1000)
                truth = {h[0] for h in exact}
                if truth:
                    hits.append(len(truth & {h[0] for h in ann}) / len(truth))
                    tied.append(recall_with_ties(exact, ann))
                    within.append(recall_within(exact, ann))
                    gaps.append(near_ties(exact, ann))
                    first10.append(len(truth & {h[0] for h in alone}) / len(truth))
                    completed.append(len(truth & {h[0] for h in full[:10]}) / len(truth))
                    completed_ties.append(recall_with_ties(exact, full[:10]))
                    completed_within.append(recall_within(exact, full[:10]))
            out[label] = {
                "recall_at_10": round(statistics.fmean(hits), 4) if hits else None,
                "recall_at_10_ties": round(statistics.fmean(tied), 4) if tied else None,
                "recall_at_10_n10": round(statistics.fmean(first10), 4) if first10 else None,
                "recall_at_10_epsilon_0.01": round(statistics.fmean(within), 4) if within else None,
                "similarity_gap_10th_max": round(max(gaps), 4) if gaps else None,
                "per_query": [round(h, 2) for h in hits],
                "recall_at_10_hybrid_vector_ranking": (
                    round(statistics.fmean(completed), 4) if completed else None
                ),
                "recall_at_10_hybrid_vector_ranking_ties": (
                    round(statistics.fmean(completed_ties), 4) if completed_ties else None
                ),
                "recall_at_10_hybrid_vector_ranking_epsilon_0.01": (
                    round(statistics.fmean(completed_within), 4) if completed_within else None
                ),
                "per_query_hybrid_vector_ranking": [round(h, 2) for h in completed],
                "per_query_epsilon": [round(h, 2) for h in within],
                "per_query_hybrid_vector_ranking_epsilon": [round(h, 2) for h in completed_within],
                "depth": depth,
                "index_p95_ms": common.percentiles(ann_ms)["p95_ms"],
                "exact_p50_ms": common.percentiles(exact_ms)["p50_ms"],
            }
    return out


async def recall_own_vectors(
    url: str, space_name: str, count: int, ef_search: int
) -> dict[str, Any]:
    """recall@10 when the query is a clip's own vector (what "similar clips" asks): queries
    from the data's own distribution, beside the text queries' 2-3 words, which lie far from
    every clip (a short text's vector against titles with their game and broadcaster). Tells a
    graph that cannot reach a region from queries that fall between regions."""
    async with opened(url, space_name) as (conn, space, corpus):
        cur = await conn.execute(
            sql.SQL(
                "SELECT clip_id, embedding::vector FROM {} TABLESAMPLE SYSTEM (0.1) REPEATABLE (5)"
                " LIMIT %s"
            ).format(sql.Identifier(space.table_name)),
            (count,),
        )
        sample = await cur.fetchall()
        params = core.Params(ef_search=ef_search)
        no_filter = clip_search.Filters(include_nsfw=True)
        hits, within, gaps, ann_ms = [], [], [], []
        for _, v in sample:
            vec = v.to_numpy()
            t = time.perf_counter()
            ann = await core.semantic_branch(
                conn, corpus, vec, no_filter.where(), params, ranking.branch_depth(params)
            )
            ann_ms.append((time.perf_counter() - t) * 1000)
            ann = ann[:10]
            exact = await exact_top(conn, corpus, vec, no_filter)
            truth = {h[0] for h in exact}
            if truth:
                hits.append(len(truth & {h[0] for h in ann}) / len(truth))
                within.append(recall_within(exact, ann))
                gaps.append(near_ties(exact, ann))
    return {
        "queries": len(sample),
        "ef_search": ef_search,
        "recall_at_10": round(statistics.fmean(hits), 4) if hits else None,
        "recall_at_10_epsilon_0.01": round(statistics.fmean(within), 4) if within else None,
        "similarity_gap_10th_max": round(max(gaps), 4) if gaps else None,
        "per_query": [round(h, 2) for h in hits],
        "index_p95_ms": common.percentiles(ann_ms)["p95_ms"],
    }


def binary_quantized(
    url: str, table: str, dims: int, texts: list[str], vectors: str
) -> dict[str, Any]:
    """An HNSW index on the sign bits of the halfvec space, candidates re-ranked by the full
    vector: size, build time, recall@10 against the exact top 10, and p95 per re-rank factor."""
    index = f"{table}_bq_bench"
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET maintenance_work_mem = '8GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        t = time.monotonic()
        conn.execute(
            f"CREATE INDEX {index} ON {table} USING hnsw "
            f"((binary_quantize(embedding)::bit({dims})) bit_hamming_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        out["build_s"] = round(time.monotonic() - t, 1)
        out["index_bytes"] = conn.execute(f"SELECT pg_relation_size('{index}')").fetchone()[0]  # type: ignore[index]
        probes = [np.asarray(vector_for(x, dims, vectors), dtype=np.float32) for x in texts]
        truth = []
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            for v in probes:
                rows = conn.execute(
                    f"SELECT clip_id FROM {table} ORDER BY embedding <=> %s::halfvec LIMIT 10",
                    (v,),
                ).fetchall()
                truth.append({r[0] for r in rows})
        for factor in (4, 10, 20, 40):
            got, times = [], []
            for v, exact in zip(probes, truth, strict=True):
                with conn.transaction():
                    conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, 10 * factor)}")
                    t = time.perf_counter()
                    rows = conn.execute(
                        f"SELECT clip_id FROM (SELECT clip_id, embedding FROM {table} ORDER BY "
                        f"binary_quantize(embedding)::bit({dims}) <~> binary_quantize(%s::halfvec)"
                        f" LIMIT %s) c ORDER BY embedding <=> %s::halfvec LIMIT 10",
                        (v, 10 * factor, v),
                    ).fetchall()
                    times.append((time.perf_counter() - t) * 1000)
                got.append(len(exact & {r[0] for r in rows}) / 10)
            out[f"rerank_x{factor}"] = {
                "recall_at_10": round(statistics.fmean(got), 4),
                **common.percentiles(times),
            }
        conn.execute(f"DROP INDEX {index}")
    return out


def admin_token(url: str) -> str:
    token = auth.TOKEN_PREFIX + "bench-" + os.urandom(16).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path = clipembed, public")
        conn.execute(
            "INSERT INTO clipembed_admin_tokens (name, token_hash) VALUES (%s, %s)",
            (f"bench-{os.urandom(4).hex()}", auth.digest(token)),
        )
    return token


def over_http(env: dict[str, str], url: str, texts: list[str], clients: int) -> dict[str, Any]:
    """Through ``clipembed serve``: /status p95; each mode with one client and unique queries
    (each text once per mode, with a suffix: nothing cached); then ``clients`` clients hybrid."""
    token = admin_token(url)
    # one benchmark client: the per-client search limits off
    limits_off = {
        "CLIPEMBED_SEARCH_REQUESTS_PER_SECOND": "0",
        "CLIPEMBED_SEARCH_EMBEDS_PER_MINUTE": "0",
    }
    out: dict[str, Any] = {}
    with common.serving(env | limits_off) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            auth_header = {"Authorization": f"Bearer {token}"}
            for _ in range(3):
                client.get("/status", headers=auth_header).raise_for_status()
            times = []
            for _ in range(100):
                t = time.perf_counter()
                client.get("/status", headers=auth_header).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
            out["status"] = {"runs": 100, **common.percentiles(times)}
            for mode in MODES:
                times = []
                for i, text in enumerate(texts):
                    t = time.perf_counter()
                    r = client.get("/search", params={"q": f"{text} {mode}{i}", "mode": mode})
                    times.append((time.perf_counter() - t) * 1000)
                    r.raise_for_status()
                out[f"{mode}_1_client"] = {"queries": len(times), **common.percentiles(times)}
        out[f"hybrid_{clients}_clients"] = asyncio.run(_concurrent(base, texts, clients))
    return out


async def _concurrent(base: str, texts: list[str], clients: int) -> dict[str, Any]:
    todo = [f"{t} many{i}" for i, t in enumerate(texts)]
    times: list[float] = []
    statuses: dict[int, int] = {}

    async def client_loop(http: httpx.AsyncClient) -> None:
        while todo:
            q = todo.pop()
            t = time.perf_counter()
            r = await http.get("/search", params={"q": q, "mode": "hybrid"})
            times.append((time.perf_counter() - t) * 1000)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {
        "queries": len(times),
        "searches_per_s": round(len(times) / seconds, 1),
        "statuses": statuses,
        **common.percentiles(times),
    }
