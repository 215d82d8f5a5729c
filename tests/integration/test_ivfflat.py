"""A space whose index is IVFFlat (CLIPEMBED_INDEX_KIND=ivfflat), on real PostgreSQL + pgvector:
search reads it with the probes asked for, a large backfill builds it after loading with lists
for the rows loaded, and an index the table has outgrown is rebuilt."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from clipembed import runtime, spaces
from clipembed.bulk import backfill, index_policy
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.store import space_table
from tests.integration.test_backfill import assert_correct, stored
from tests.integration.test_search import _settings
from tests.plugins.jobs import clip_record, load_clips

IVFFLAT = space_table.IndexBuild(kind="ivfflat")


def _clips_with_vectors(url: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` clips with random 384-dim vectors, in the clips table and the space's."""
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor().copy(
            "COPY clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,"
            " broadcaster_name, game_name, created_at, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(
                ["varchar", "text", "text", "varchar", "varchar", "varchar", "varchar",
                 "timestamptz", "vector"]
            )  # fmt: skip
            now = dt.datetime.now(dt.UTC)
            for i in range(count):
                copy.write_row((f"r{i}", "u", "e", f"clip {i}", "c", "b", "g", now, vectors[i]))
    return vectors


def _fill_space(url: str, space: spaces.Space) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {space.table_name} (clip_id, embedding, model, content_hash)"
            " SELECT id, embedding, 'random', '\\x00' FROM clips"
        )
        conn.execute(f"ANALYZE {space.table_name}")


def _index(url: str, space: spaces.Space) -> tuple[str, list[str]] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(space_table.INDEX_KIND, (space.index_name,)).fetchone()
    return (str(row[0]), list(row[1] or [])) if row else None


def _as_ivfflat(url: str, space: spaces.Space, rows: int) -> None:
    """Replace the space's HNSW index with an IVFFlat one whose lists suit ``rows`` rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(space_table.drop_index(space.index_name))
        conn.execute(
            space_table.create_index(
                space.table_name, space.index_name, space.storage, IVFFLAT, rows
            )
        )


async def test_search_reads_the_ivfflat_index_with_the_probes_asked_for(database_factory, tmp_path):
    """3,000 clips in 3 lists: with the default probes every list is scanned and the semantic
    branch returns the exact top 10, through the index (no sequential scan); with 1 probe it
    scans one list and misses neighbours in the others, so the setting reaches the scan."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(5)
    vectors = _clips_with_vectors(url, 3000, rng)
    async with runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r:
        space = await spaces.active_in(r.pool)
        _fill_space(url, space)
        _as_ivfflat(url, space, rows=3000)
        assert _index(url, space) == ("ivfflat", ["lists=3"])
        corpus = clip_search.corpus_for(space)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = {}
        with psycopg.connect(url) as conn:
            for cid, tid in conn.execute("SELECT id, twitch_clip_id FROM clips").fetchall():
                ids[cid] = int(tid[1:])
        exact_hits, one_probe_hits = 0, 0
        queries = rng.standard_normal((8, 384)).astype(np.float32)
        async with r.pool.connection() as conn:
            for query in queries:
                truth = set(np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10].tolist())
                async with conn.transaction():
                    hits = await core.semantic_branch(
                        conn, corpus, query, clip_search.Filters().where(), core.Params(), 10
                    )
                    cur = await conn.execute(
                        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables"
                        " WHERE relname = %s",
                        (space.table_name,),
                    )
                    seq, idx = await cur.fetchone() or (None, None)
                    assert seq == 0 and idx and idx >= 1
                exact_hits += len({ids[h] for h, _ in hits} & truth)
                narrow = await core.semantic_branch(
                    conn,
                    corpus,
                    query,
                    clip_search.Filters().where(),
                    core.Params(probes=1),
                    10,
                )
                one_probe_hits += len({ids[h] for h, _ in narrow} & truth)
    assert exact_hits == 80
    assert one_probe_hits < 80


async def test_a_large_backfill_builds_the_ivfflat_index_after_loading(
    openai_settings, database_url, tmp_path
):
    """3,000 clips to embed into a new space's IVFFlat index (one list, made on the empty table):
    the backfill drops it, embeds every clip, and builds it once with lists for 3,000 rows."""
    await load_clips(database_url, [clip_record(i) for i in range(3000)], tmp_path)
    cfg = openai_settings(database_url=database_url, clipembed_index_kind="ivfflat")
    async with runtime.open_runtime(cfg) as rt:
        space = rt.require_space()
        _as_ivfflat(database_url, space, rows=0)
        assert _index(database_url, space) == ("ivfflat", ["lists=1"])
        summary = await backfill.run(rt, batch_size=100, concurrency=2)
    assert summary.processed == 3000 and summary.failed == 0
    assert (
        summary.index_rebuilt
        and summary.index_policy == "an IVFFlat index trains on the rows loaded"
    )
    assert _index(database_url, space) == ("ivfflat", ["lists=3"])
    for row in stored(database_url):
        assert_correct(row)


async def test_auto_builds_ivfflat_for_a_large_load_over_the_spaces_hnsw_index(
    openai_settings, database_url, tmp_path, monkeypatch
):
    """``auto`` (the default) with its threshold at 2,000 rows: the space's HNSW index, made on
    the empty table, is dropped by a 3,000-clip backfill, which builds IVFFlat after loading."""
    monkeypatch.setattr(space_table, "AUTO_IVFFLAT_MIN_ROWS", 2000)
    await load_clips(database_url, [clip_record(i) for i in range(3000)], tmp_path)
    cfg = openai_settings(database_url=database_url)
    assert cfg.clipembed_index_kind == "auto"
    async with runtime.open_runtime(cfg) as rt:
        space = rt.require_space()
        assert (_index(database_url, space) or ("",))[0] == "hnsw"
        summary = await backfill.run(rt, batch_size=100, concurrency=2)
    assert summary.processed == 3000 and summary.index_rebuilt
    assert summary.index_policy == "an IVFFlat index trains on the rows loaded"
    assert _index(database_url, space) == ("ivfflat", ["lists=3"])


async def test_an_outgrown_ivfflat_index_is_rebuilt_and_a_fitting_one_is_kept(
    database_factory, tmp_path
):
    """An IVFFlat index made for 1,000 rows (one list) under 4,000 is outgrown, and its rebuild
    (which replaces it) has four lists and fits; an HNSW index is never outgrown."""
    url = database_factory.new(dimensions=384)
    _clips_with_vectors(url, 4000, np.random.default_rng(7))
    async with runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r:
        space = await spaces.active_in(r.pool)
        _fill_space(url, space)
        assert not await index_policy.ivfflat_outgrown(r.pool, space)
        assert (_index(url, space) or ("",))[0] == "hnsw"
        _as_ivfflat(url, space, rows=1000)
        assert await index_policy.ivfflat_outgrown(r.pool, space)
        await index_policy.rebuild_index(r.pool, space, build=IVFFLAT)  # replaces it in place
        assert _index(url, space) == ("ivfflat", ["lists=4"])
        assert not await index_policy.ivfflat_outgrown(r.pool, space)
