"""Search latency and vector recall at scale: 100,000 clips with random unit vectors (768 dims).

p50/p95 latency per mode with a warm query-embedding cache (the fake provider behind a Redis
cache: every query embedded once before timing), and the vector branch's recall@10 against
exact search across ef_search values. Targets: hybrid p95 <= 50 ms, recall@10 >= 0.95.

    python -m bench.search_speed [--clips 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench import common
from clipembed import demo_data, runtime, settings
from clipembed.db import migrations
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.testing import servers

DIMS = 768
QUERIES = [
    "insane clutch",
    "funny bug",
    "world record speedrun",
    "boss fight first try",
    "chat goes wild",
    "best play of the tournament",
    "rage quit",
    "神プレイ",
    "레전드 클러치",
    "final circle",
    "ace with pistol",
    "donation reaction",
    "stream sniper",
    "bugged wall run",
    "no way he survived",
]


RARE_GAME = "Rare Game"
CLUSTERS = 2000  # real embeddings are clustered (low intrinsic dimension); uniform noise is not
NOISE = 1.0  # per-dimension noise around a centroid: same-cluster cosine ~0.5, like related texts


def vectors(count: int, seed: int = 7) -> np.ndarray:
    """Unit vectors drawn around random topic centroids, like text embeddings.

    Uniformly random 768-dimensional vectors have no neighbourhood structure at all (every
    distance is ~1), on which no approximate index has meaningful recall; see docs/benchmarks.md.
    """
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((CLUSTERS, DIMS)).astype(np.float32)
    picks = rng.integers(0, CLUSTERS, count)
    out = centroids[picks] + NOISE * rng.standard_normal((count, DIMS)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def load(url: str, clips: int) -> float:
    embeddings = vectors(clips)
    t = time.monotonic()
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute("DROP INDEX IF EXISTS embeddings_space_1_hnsw")
        with conn.cursor().copy(
            "COPY clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name, broadcaster_name, "
            "game_name, language, created_at, embedding, embedding_model) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(
                [
                    "varchar",
                    "text",
                    "text",
                    "varchar",
                    "varchar",
                    "varchar",
                    "varchar",
                    "varchar",
                    "timestamptz",
                    "vector",
                    "varchar",
                ]
            )
            for c, vec in zip(demo_data.generate(clips, seed=11), embeddings, strict=True):
                copy.write_row(
                    (
                        c["twitch_clip_id"],
                        c["twitch_clip_url"],
                        c["embed_url"],
                        c["title"],
                        c["creator_name"],
                        c["broadcaster_name"],
                        c["game_name"],
                        c["language"],
                        dt.datetime.fromisoformat(c["created_at"].replace("Z", "+00:00")),
                        vec,
                        "bench",
                    )
                )
        # a game with 0.1% of the clips: only iterative index scans can fill its pages
        conn.execute(
            "UPDATE clips SET game_name = %s WHERE twitch_clip_id IN "
            "(SELECT twitch_clip_id FROM clips ORDER BY twitch_clip_id LIMIT %s)",
            (RARE_GAME, max(clips // 1000, 1)),
        )
        conn.execute("TRUNCATE embedding_queue")
        # search reads the default space's table (migration 0009); the clips columns mirror it
        conn.execute("ALTER TABLE embeddings_space_1 DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO embeddings_space_1 (clip_id, embedding, model, content_hash, game_key,"
            " broadcaster_key) SELECT id, embedding, embedding_model, '\\x00', lower(game_name),"
            " lower(broadcaster_name) FROM clips WHERE embedding IS NOT NULL"
        )
        conn.execute("ALTER TABLE embeddings_space_1 ENABLE TRIGGER USER")
        conn.commit()
        conn.autocommit = True
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute(
            "CREATE INDEX embeddings_space_1_hnsw ON embeddings_space_1 "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        conn.execute("VACUUM ANALYZE clips")
        conn.execute("VACUUM ANALYZE embeddings_space_1")
        conn.execute("VACUUM ANALYZE clip_postings")
        conn.execute("VACUUM ANALYZE clip_doclen")
    return time.monotonic() - t


async def measure(url: str, base_url: str, redis_url: str, n_queries: int) -> dict:
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="openai",
        openai_api_key="sk-bench-0000000000",
        embedding_api_base_url=base_url,
        database_url=url,
        redis_url=redis_url,
        redis_key_prefix="clipembed-bench:",
        embedding_requests_per_minute=100000,
    )
    out: dict = {}
    async with runtime.open_runtime(cfg) as rt:
        svc = rt.require_service()
        await svc.embed(QUERIES)  # warm the query-embedding cache
        for mode in ("keyword", "semantic", "hybrid"):
            params = core.Params(mode=mode, limit=20)  # type: ignore[arg-type]
            times = []
            for i in range(n_queries):
                q = QUERIES[i % len(QUERIES)]
                t = time.perf_counter()
                await clip_search.search(
                    rt.pool, svc, q, params=params, filters=clip_search.Filters()
                )
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            out[mode] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(times[int(0.95 * len(times)) - 1], 2),
                "queries": len(times),
            }
        # filtered hybrid (a game filter inside both branches)
        params = core.Params(mode="hybrid", limit=20)
        times = []
        for i in range(n_queries // 2):
            t = time.perf_counter()
            await clip_search.search(
                rt.pool,
                svc,
                QUERIES[i % len(QUERIES)],
                params=params,
                filters=clip_search.Filters(game="Minecraft"),
            )
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out["hybrid_filtered_game"] = common.percentiles(times, 2)
        # a rare filter value (a game ~0.1% of clips have): the vector branch must keep
        # scanning the index (iterative scan) to fill the page, the worst case of filtering
        async with rt.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM clips WHERE game_name = %s", (RARE_GAME,)
            )
            rare_count = (await cur.fetchone() or (0,))[0]
            await conn.commit()
        for mode in ("semantic", "hybrid"):
            times, filled = [], []
            for i in range(n_queries // 4):
                t = time.perf_counter()
                res = await clip_search.search(
                    rt.pool,
                    svc,
                    QUERIES[i % len(QUERIES)],
                    params=core.Params(mode=mode, limit=20),  # type: ignore[arg-type]
                    filters=clip_search.Filters(game=RARE_GAME),
                )
                times.append((time.perf_counter() - t) * 1000)
                filled.append(len(res))
            out[f"{mode}_filtered_rare_game"] = {
                "game_clips": rare_count,
                "results_per_page_min": min(filled) if filled else 0,
                **common.percentiles(times, 2),
            }
        # recall@10 of the HNSW branch against exact search
        probes = list(_probes())
        exact = []
        async with rt.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_indexscan = off")
                for v in probes:
                    cur = await conn.execute(
                        "SELECT clip_id FROM embeddings_space_1 ORDER BY embedding <=> %s LIMIT 10",
                        (v,),
                    )
                    exact.append({r[0] for r in await cur.fetchall()})
            recall = {}
            for ef in (40, 64, 100, 200):
                got = []
                for v, truth in zip(probes, exact, strict=True):
                    hits = await core.semantic_branch(
                        conn, clip_search.CLIPS, v, core.no_filters(), core.Params(ef_search=ef), 10
                    )
                    got.append(len(truth & {h[0] for h in hits}) / 10)
                recall[f"ef_search={ef}"] = round(sum(got) / len(got), 4)
        out["vector_recall@10"] = recall
        # clean our cache keys
        if svc.link is not None:
            keys = [k async for k in svc.link.client.scan_iter(match="clipembed-bench:*")]
            if keys:
                await svc.link.client.delete(*keys)
    return out


def _probes() -> np.ndarray:
    """Queries from the same distribution as the data (same centroids, new noise)."""
    rng = np.random.default_rng(7)
    centroids = rng.standard_normal((CLUSTERS, DIMS)).astype(np.float32)
    q = np.random.default_rng(99)
    out = centroids[q.integers(0, CLUSTERS, 50)] + 0.6 * q.standard_normal((50, DIMS)).astype(
        np.float32
    )
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--noise", type=float, default=NOISE, help="0 = tight clusters; large = uniform"
    )
    parser.add_argument("--name", default="search_speed", help="results file stem")
    args = parser.parse_args()
    globals()["NOISE"] = args.noise
    with (
        common.postgres() as url,
        common.fake_provider() as base,
        tempfile.TemporaryDirectory() as redis_dir,
    ):
        redis = servers.RedisProcess(Path(redis_dir)).start()  # private: a warm cache we own

        async def migrate() -> None:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            async with conn:
                await migrations.up(conn, dimensions=DIMS)

        asyncio.run(migrate())
        load_seconds = load(url, args.clips)
        try:
            result = asyncio.run(measure(url, base, redis.url, args.queries))
        finally:
            redis.stop()
    common.save(
        args.name,
        {
            "clips": args.clips,
            "dimensions": DIMS,
            "vectors": f"{CLUSTERS} clusters, noise {args.noise} (same-cluster cosine ~{1 / (1 + args.noise**2):.2f})",
            "load_and_index_seconds": round(load_seconds, 1),
            "default_ef_search": core.DEFAULT_EF_SEARCH,
            **result,
        },
    )


if __name__ == "__main__":
    main()
