"""Search modes, filters, pagination and similar clips on real PostgreSQL + pgvector."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import runtime, settings, spaces
from clipembed.search import bm25, core, filtered, ranking
from clipembed.search import clips as clip_search

pytestmark = pytest.mark.local_model


@pytest.fixture
async def rt(search_db, tmp_path):
    url, _ = search_db
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
        # the semantic branch must answer: a local model's encode on a loaded 2-core machine
        # can pass the product's 1 s deadline (the deadline is test_search_degraded's subject)
        search_embed_timeout_ms=60_000,
    )
    core.clear_stats_cache()
    async with runtime.open_runtime(cfg) as r:
        yield r


async def run(rt, q, **kw):
    filters = clip_search.Filters(
        **{
            k: kw.pop(k)
            for k in list(kw)
            if k in {f.name for f in dataclasses.fields(clip_search.Filters)}
        }
    )
    return await clip_search.search(
        rt.pool, rt.service, q, params=core.Params(**kw), filters=filters
    )


async def test_each_mode_finds_the_obvious_clip(rt):
    for mode in ("keyword", "semantic", "hybrid"):
        results = await run(rt, "AWP headshot clutch", mode=mode, limit=3)
        assert results[0]["title"] == "Insane AWP headshot clutch", mode
    hybrid = await run(rt, "AWP headshot clutch", mode="hybrid", limit=3)
    assert hybrid[0]["keyword"]["rank"] == 1 and hybrid[0]["semantic"]["rank"] >= 1
    semantic_only = await run(
        rt, "an explosion destroys a building in a block game", mode="semantic", limit=2
    )
    assert "Creeper blows up the whole house" in [r["title"] for r in semantic_only]


async def test_keyword_is_bm25_with_or_semantics_and_field_weights(rt):
    results = await run(rt, "clutch deagle zebra", mode="keyword", limit=10)
    titles = [r["title"] for r in results]
    assert titles[0] == "Clutch 1v4 with the deagle"  # matches two query terms
    assert "Insane AWP headshot clutch" in titles  # OR: one term is enough
    # a title match outranks a broadcaster-only match (A above B)
    results = await run(rt, "xqc chase", mode="keyword", limit=5)
    assert results[0]["title"] == "Police chase goes wrong"


async def test_keyword_scores_equal_the_reference_formula(rt, search_db):
    url, _ = search_db
    results = await run(rt, "clutch headshot", mode="keyword", limit=10)
    wa, wb, wc, wd = clip_search.CLIPS.field_weights
    with psycopg.connect(url) as conn:
        terms = [
            r[0]
            for r in conn.execute(
                "SELECT lexeme FROM unnest(to_tsvector('english', 'clutch headshot'))"
            )
        ]
        postings = conn.execute(
            "SELECT lexeme, doc_id, tf_a, tf_b, tf_c, tf_d FROM clip_postings"
        ).fetchall()
        lengths = {
            r[0]: wa * r[1] + wb * r[2] + wc * r[3] + wd * r[4]
            for r in conn.execute("SELECT * FROM clip_doclen")
        }
    df = {t: sum(1 for p in postings if p[0] == t) for t in terms}
    avgdl = sum(lengths.values()) / len(lengths)
    for r in results:
        doc = {
            p[0]: wa * p[2] + wb * p[3] + wc * p[4] + wd * p[5] for p in postings if p[1] == r["id"]
        }
        expected = bm25.score(
            terms, doc, dl=lengths[r["id"]], avgdl=avgdl, n_docs=len(lengths), df=df
        )
        assert r["keyword"]["score"] == pytest.approx(expected, rel=1e-6)


async def test_filters_apply_inside_both_branches(rt):
    for mode in ("keyword", "semantic", "hybrid"):
        res = await run(rt, "clutch", mode=mode, game="counter-strike", limit=10)
        assert res and all(r["game_name"] == "Counter-Strike" for r in res)
        res = await run(rt, "funny", mode=mode, broadcaster="XQC", limit=10)
        assert res and all(r["broadcaster_name"] == "xqc" for r in res)
        res = await run(rt, "pentakill clutch", mode=mode, language="ko", limit=10)
        assert res and all(r["language"] == "ko" for r in res)
    now = dt.datetime.now(dt.UTC)
    recent = await run(
        rt, "clutch", mode="semantic", created_from=now - dt.timedelta(days=2), limit=20
    )
    assert recent and all(r["created_at"] >= now - dt.timedelta(days=2) for r in recent)
    older = await run(
        rt, "clutch", mode="semantic", created_to=now - dt.timedelta(days=10), limit=20
    )
    assert older and all(r["created_at"] < now - dt.timedelta(days=10) for r in older)


async def test_removed_never_and_nsfw_only_when_asked(rt):
    for mode in ("keyword", "semantic", "hybrid"):
        titles = [r["title"] for r in await run(rt, "removed clip clutch", mode=mode, limit=50)]
        assert "Removed clip about a clutch" not in titles
        titles = [r["title"] for r in await run(rt, "late night stream", mode=mode, limit=50)]
        assert "Uncensored late night stream" not in titles
        titles = [
            r["title"]
            for r in await run(rt, "late night stream", mode=mode, limit=50, include_nsfw=True)
        ]
        assert "Uncensored late night stream" in titles


async def test_pagination_has_no_duplicates_or_gaps(rt):
    full = await run(rt, "clutch game stream", mode="hybrid", limit=13)
    pages = [
        await run(rt, "clutch game stream", mode="hybrid", limit=4, offset=o) for o in (0, 4, 8, 12)
    ]
    flat = [r["id"] for p in pages for r in p]
    assert flat == [r["id"] for r in full][: len(flat)]
    assert len(set(flat)) == len(flat) == len(full)
    with pytest.raises(clip_search.InvalidQuery, match="offset"):
        await run(rt, "x", limit=100, offset=150)


async def test_similar_clips(rt, search_db):
    _, ids = search_db
    res = await clip_search.similar(
        rt.pool,
        ids["Creeper blows up the whole house"],
        params=core.Params(limit=3),
        filters=clip_search.Filters(),
    )
    titles = [r["title"] for r in res]
    assert "Creeper blows up the whole house" not in titles
    assert titles[0] == "Built a giant castle in survival"
    assert (
        await clip_search.similar(
            rt.pool,
            ids["Removed clip about a clutch"],
            params=core.Params(),
            filters=clip_search.Filters(),
        )
        is None
    )


def _random_clips(url: str, count: int, rare_every: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` clips with random vectors; every ``rare_every``-th (offset 7) is "Rare Game"."""
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor().copy(
            "COPY clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name, broadcaster_name, "
            "game_name, created_at, embedding) FROM STDIN WITH (FORMAT BINARY)"
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
                    "timestamptz",
                    "vector",
                ]
            )
            for i in range(count):
                game = "Rare Game" if i % rare_every == 7 else "Common Game"
                copy.write_row(
                    (f"r{i}", "u", "e", f"clip {i}", "c", "b", game, dt.datetime.now(dt.UTC),
                     vectors[i])
                )  # fmt: skip
    return vectors


def _copy_to_space(conn: psycopg.Connection, space: spaces.Space) -> None:
    """The clips' vectors into the space's own table, as a backfill leaves them."""
    conn.execute(
        f"INSERT INTO {space.table_name} (clip_id, embedding, model, content_hash,"
        " game_key, broadcaster_key) SELECT id, embedding, 'random', '\\x00',"
        " lower(game_name), lower(broadcaster_name) FROM clips"
    )


def _settings(url: str, tmp_path) -> settings.Settings:
    return settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
    )


async def test_rare_filter_value_is_filled_by_iterative_scans(database_factory, tmp_path):
    """3 clips of a rare game among 3,000: a plain HNSW scan with a small ef_search finds few of
    them after filtering; iterative scans keep going until the page is full."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(1)
    _random_clips(url, 3000, 1000, rng)
    async with (
        runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r,
        r.pool.connection() as conn,
    ):
        query = rng.standard_normal(384).astype(np.float32)
        hits = await ranking.rank(
            conn,
            clip_search.CLIPS,
            query=None,
            embed_query=None,
            where=clip_search.Filters(game="Rare Game").where(),
            params=core.Params(mode="semantic", limit=3, ef_search=10),
            vector=query,
        )
    assert len(hits) == 3


async def test_semantic_branch_reads_the_hnsw_index_on_a_small_corpus(database_factory, tmp_path):
    """3,000 clips whose vectors live in the space's table only (as after a backfill), and
    ef_search 200: PostgreSQL's cost model prices the HNSW scan above a full scan with an exact
    sort (~4 ms of server CPU per search at 3,504 real clips, ~0.6 through the index), so the
    branch asks for the index; without a filter no table is read by a sequential scan."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(3)
    _random_clips(url, 3000, 1000, rng)
    params = core.Params(mode="semantic", limit=10)
    async with (
        runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r,
        r.pool.connection() as conn,
    ):
        space = await spaces.active_in(r.pool)
        with psycopg.connect(url, autocommit=True) as setup:
            _copy_to_space(setup, space)
            setup.execute("UPDATE clips SET embedding = NULL")
            setup.execute(f"VACUUM FULL ANALYZE clips, {space.table_name}")
        async with conn.transaction():  # pg_stat_xact_*: this transaction's own scans
            query = rng.standard_normal(384).astype(np.float32)
            hits = await core.semantic_branch(
                conn,
                clip_search.corpus_for(space),
                query,
                clip_search.Filters().where(),
                params,
                10,
            )
            cur = await conn.execute(
                "SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables"
                " WHERE relname = ANY(%s) ORDER BY relname",
                (["clips", space.table_name],),
            )
            scans = {name: (seq, idx > 0) for name, seq, idx in await cur.fetchall()}
    assert len(hits) == 10
    assert scans == {"clips": (0, True), space.table_name: (0, True)}


async def test_selective_filter_ranks_its_clips_exactly(database_factory, tmp_path, monkeypatch):
    """A game with 60 of 3,000 clips: its vectors are ranked exactly (the true top 10 by
    cosine distance, computed here), and with more than EXACT_MAX the index answers instead."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(2)
    vectors = _random_clips(url, 3000, 50, rng)
    rare = np.array([i for i in range(3000) if i % 50 == 7])
    params = core.Params(mode="semantic", limit=10, ef_search=10)
    where = clip_search.Filters(game="Rare Game").where()
    async with (
        runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r,
        r.pool.connection() as conn,
    ):
        cur = await conn.execute("SELECT twitch_clip_id, id FROM clips")
        ids = {slug: i for slug, i in await cur.fetchall()}
        for _ in range(5):
            query = rng.standard_normal(384).astype(np.float32)
            unit = vectors[rare] / np.linalg.norm(vectors[rare], axis=1, keepdims=True)
            similarity = unit @ (query / np.linalg.norm(query))
            truth = [ids[f"r{rare[j]}"] for j in np.argsort(-similarity)[:10]]
            hits = await core.semantic_branch(conn, clip_search.CLIPS, query, where, params, 10,
                                              selective=True)  # fmt: skip
            assert [h[0] for h in hits] == truth
            assert [round(h[1], 4) for h in hits] == [
                round(float(x), 4) for x in np.sort(similarity)[::-1][:10]
            ]
        monkeypatch.setattr(filtered, "EXACT_MAX", 59)  # 60 kept: more than the exact path takes
        hits = await core.semantic_branch(conn, clip_search.CLIPS, query, where, params, 10,
                                          selective=True)  # fmt: skip
        assert len(hits) == 10 and set(h[0] for h in hits) <= {ids[f"r{i}"] for i in rare}


async def test_keyword_top_n_is_the_true_top_of_the_full_ranking(
    database_factory, tmp_path, monkeypatch
):
    """The branch's LIMIT must cut a score-ordered list (a planner-dependent order once broke this)."""
    from clipembed import demo_data
    from clipembed.bulk import importer

    url = database_factory.new(dimensions=384)
    path = tmp_path / "clips.jsonl"
    import json

    path.write_text("\n".join(json.dumps(c) for c in demo_data.generate(1500, seed=4)) + "\n")
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
    )
    async with runtime.open_runtime(cfg, with_service=False) as r, r.pool.connection() as conn:
        await importer.import_file(conn, path)
        await conn.execute("ANALYZE")
        await conn.commit()
        core.clear_stats_cache()
        for q in [
            "insane clutch chat",
            "world record speedrun skip",
            "boss fight first try",
            "chat goes wild",
        ]:
            top = await core.keyword_branch(
                conn, clip_search.CLIPS, q, clip_search.Filters().where(), core.Params(), 25
            )
            full = await core.keyword_branch(
                conn,
                clip_search.CLIPS,
                q,
                clip_search.Filters().where(),
                core.Params(),
                100_000,
            )
            assert len(top) == 25
            assert [d for d, _ in top] == [d for d, _ in full[:25]], q
        # a filter the cut list cannot satisfy: ranked again in full, the same head
        monkeypatch.setattr(core, "OVERFETCH", 1)
        monkeypatch.setattr(core, "OVERFETCH_MIN", 0)
        korean = clip_search.Filters(language="ko").where()
        for q in ["insane clutch chat", "chat goes wild"]:
            top = await core.keyword_branch(conn, clip_search.CLIPS, q, korean, core.Params(), 25)
            full = await core.keyword_branch(
                conn, clip_search.CLIPS, q, korean, core.Params(), 100_000
            )
            assert len(top) == min(25, len(full)) > 0
            assert [d for d, _ in top] == [d for d, _ in full[:25]], q


async def test_hybrid_vector_ranking_takes_in_the_clips_its_index_missed(
    database_factory, tmp_path
):
    """The keyword branch's candidates that the vector branch did not return get their exact
    similarity from the database, in the clips table and in a space's own table: a clip the
    index missed (here: removed from its list) is put back in its place, one below the
    window's last stays out, and the scores are numpy's cosine similarities."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(4)
    vectors = _random_clips(url, 500, 1000, rng)
    query = rng.standard_normal(384).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ (query / np.linalg.norm(query))
    order = np.argsort(-similarity)
    async with (
        runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r,
        r.pool.connection() as conn,
    ):
        cur = await conn.execute("SELECT twitch_clip_id, id FROM clips")
        ids = {slug: i for slug, i in await cur.fetchall()}
        space = await spaces.active_in(r.pool)
        with psycopg.connect(url, autocommit=True) as setup:
            _copy_to_space(setup, space)

        def clip(rank: int) -> tuple[object, float]:
            return ids[f"r{order[rank]}"], float(similarity[order[rank]])

        # the index "missed" the 3rd nearest, so its list of 10 reached the 11th
        semantic = [clip(k) for k in range(11) if k != 2]
        keyword = [clip(300), clip(2), clip(0)]  # a far clip, the missed one, one it has
        for corpus in (clip_search.CLIPS, clip_search.corpus_for(space)):
            got = await ranking.completed(conn, corpus, query, keyword, semantic, 10)
            assert [doc for doc, _ in got] == [clip(k)[0] for k in range(10)], corpus.table
            assert [round(s, 3) for _, s in got] == [round(clip(k)[1], 3) for k in range(10)]
