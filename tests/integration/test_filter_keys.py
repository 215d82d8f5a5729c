"""A space's game and broadcaster keys (migration 0014) on real PostgreSQL + pgvector.

Written with each vector by both write paths, filled for the spaces that exist by the migration
(with their HNSW index kept and the mirror left alone), and read by filtered search: the exact
ranking up to ``filtered.EXACT_MAX_KEYED`` clips, the HNSW scan past it, and ``clips`` deciding.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import runtime, spaces
from clipembed.bulk import backfill
from clipembed.db import migrations
from clipembed.realtime import worker
from clipembed.search import clips as clip_search
from clipembed.search import core, filtered
from clipembed.store import space_table
from tests.integration.test_search import _random_clips, _settings
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.queue import insert_clips

KEYS_MATCH = """
SELECT count(*) FILTER (WHERE e.game_key IS NOT DISTINCT FROM lower(c.game_name)
                          AND e.broadcaster_key = lower(c.broadcaster_name)),
       count(*)
FROM embeddings_space_1 e JOIN clips c ON c.id = e.clip_id
"""


def scalar(url: str, query: str, args: tuple = ()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchone()


async def test_both_write_paths_set_the_keys_and_an_edit_rewrites_them(
    openai_settings, database_url, tmp_path
):
    cfg = openai_settings(database_url=database_url)
    await load_clips(
        database_url,
        [clip_record(i, game_name="Fall Guys", broadcaster_name="Papa") for i in range(5)],
        tmp_path,
    )
    async with runtime.open_runtime(cfg) as rt:
        done = await backfill.run(rt)  # the staged upsert (apply_stage)
        assert done.processed == 5
        assert scalar(database_url, KEYS_MATCH) == (5, 5)
        assert scalar(
            database_url, "SELECT count(*) FROM embeddings_space_1 WHERE game_key = 'fall guys'"
        ) == (5,)

        # the real-time path (write_space): new clips, and an edit of the game
        insert_clips(database_url, 3, game="Minecraft")
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE clips SET game_name = 'VALORANT' WHERE twitch_clip_id = 'Clip0'")
        stats = await worker.Worker(rt, name="keys").drain()
        assert stats.embedded >= 4
    assert scalar(database_url, KEYS_MATCH) == (8, 8)
    assert scalar(
        database_url,
        "SELECT e.game_key FROM embeddings_space_1 e JOIN clips c ON c.id = e.clip_id"
        " WHERE c.twitch_clip_id = 'Clip0'",
    ) == ("valorant",)


async def test_the_migration_fills_existing_spaces_and_keeps_their_index(
    database_factory, tmp_path
):
    """At 0013 a space holds vectors without keys; 0014 fills them from ``clips``, builds the
    same HNSW index again, and does not rewrite the mirror columns; down takes the columns away."""
    url = database_factory.new(migrated=False)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrations.up(conn, dimensions=8)
        await migrations.down(conn, to=13)
    await load_clips(
        url,
        [clip_record(i, game_name=None if i == 3 else f"Game {i % 2}") for i in range(4)],
        tmp_path,
    )
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute(
            "INSERT INTO embeddings_space_1 (clip_id, embedding, model, content_hash)"
            " SELECT id, array_fill(0.5, ARRAY[8])::vector, 'm', '\\x01' FROM clips"
        )
        # a marker in the mirror: the migration's UPDATE must not fire the mirror trigger
        conn.execute("UPDATE clips SET embedding_model = 'marker'")
        before = conn.execute(
            "SELECT pg_get_indexdef('embeddings_space_1_hnsw'::regclass)"
        ).fetchone()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        applied = await migrations.up(conn, dimensions=8)
    assert [m.version for m in applied] == [14]
    assert scalar(url, KEYS_MATCH) == (4, 4)
    assert scalar(url, "SELECT count(*) FROM embeddings_space_1 WHERE game_key = 'game 0'") == (2,)
    assert scalar(url, "SELECT pg_get_indexdef('embeddings_space_1_hnsw'::regclass)") == before
    assert scalar(url, "SELECT count(*) FROM clips WHERE embedding_model = 'marker'") == (4,)
    assert scalar(url, "SELECT to_regclass('embeddings_space_1_game') IS NOT NULL") == (True,)

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrations.down(conn, to=13)
    assert scalar(
        url,
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_name = 'embeddings_space_1' AND column_name LIKE '%%_key'",
    ) == (0,)
    assert scalar(url, "SELECT count(*) FROM embeddings_space_1") == (4,)


def _space_with_random_vectors(url: str, rng: np.random.Generator) -> np.ndarray:
    """3,000 clips (every 50th, offset 7, of "Rare Game") whose vectors are written into the
    active space by the backfill's own staged upsert, as a backfill would."""
    vectors = _random_clips(url, 3000, 50, rng)
    with psycopg.connect(url) as conn:
        register_vector(conn)
        table = conn.execute("SELECT table_name FROM embedding_spaces WHERE id = 1").fetchone()[0]
        storage, dims = "vector", 384
        rows = conn.execute(
            "SELECT id, embedding, title, broadcaster_name, creator_name, game_name FROM clips"
        ).fetchall()
        conn.execute(space_table.create_stage(dims))
        with conn.cursor().copy(space_table.COPY_STAGE) as copy:
            copy.set_types(space_table.COPY_STAGE_TYPES)
            for cid, emb, title, broadcaster, creator, game in rows:
                copy.write_row((cid, emb, b"h", "random", title, broadcaster, creator, game))
        conn.execute(space_table.apply_stage(table, storage, dims), {"force": True, "retire": True})
        conn.execute("UPDATE clips SET embedding = NULL")
    return vectors


async def _corpus_and_ids(pool, conn) -> tuple[core.Corpus, dict]:
    """The active space's corpus, and each clip's id by its Twitch slug."""
    corpus = clip_search.corpus_for(await spaces.active_in(pool))
    cur = await conn.execute("SELECT twitch_clip_id, id FROM clips")
    return corpus, {slug: i for slug, i in await cur.fetchall()}


PLANS = [{}, {"enable_nestloop": "off"}, {"enable_nestloop": "off", "enable_hashjoin": "off"}]


async def test_a_game_is_ranked_exactly_through_the_space_keys(
    database_factory, tmp_path, monkeypatch
):
    """60 clips of a game among 3,000: with the clips-side exact path turned off (EXACT_MAX 0)
    the keys rank them exactly (numpy's top 10, any case of the name), whatever join the planner
    picks (a first version lost its order in a hash semi-join at a million clips); a clip whose
    game changed in ``clips`` and was not re-embedded yet is left out; past EXACT_MAX_KEYED the
    HNSW scan answers, inside the game."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(5)
    vectors = _space_with_random_vectors(url, rng)
    rare = np.array([i for i in range(3000) if i % 50 == 7])
    params = core.Params(mode="semantic", limit=10, ef_search=10)
    monkeypatch.setattr(filtered, "EXACT_MAX", 0)
    filtered.forget()
    async with (
        runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r,
        r.pool.connection() as conn,
    ):
        corpus, ids = await _corpus_and_ids(r.pool, conn)
        moved = ids[f"r{rare[0]}"]
        await conn.execute("UPDATE clips SET game_name = 'Other' WHERE id = %s", (moved,))
        await conn.commit()
        members = rare[1:]
        filters = clip_search.Filters(game="rARE gAME", include_nsfw=True)
        for plan in PLANS:
            for name, value in plan.items():
                await conn.execute(f"SET {name} = {value}")
            for _ in range(3):
                query = rng.standard_normal(384).astype(np.float32)
                unit = vectors[members] / np.linalg.norm(vectors[members], axis=1, keepdims=True)
                similarity = unit @ (query / np.linalg.norm(query))
                truth = [ids[f"r{members[j]}"] for j in np.argsort(-similarity)[:10]]
                hits = await core.semantic_branch(conn, corpus, query, filters.where(), params,
                                                  10, selective=True, keys=filters.keys())  # fmt: skip
                assert [h[0] for h in hits] == truth, plan
                assert [round(h[1], 4) for h in hits] == [
                    round(float(x), 4) for x in np.sort(similarity)[::-1][:10]
                ]
            await conn.execute("RESET ALL")
            await conn.commit()
        monkeypatch.setattr(filtered, "EXACT_MAX_KEYED", 59)  # 60 keyed: past the exact path
        filtered.forget()
        hits = await core.semantic_branch(conn, corpus, query, filters.where(), params, 10,
                                          selective=True, keys=filters.keys())  # fmt: skip
        assert len(hits) == 10
        assert {h[0] for h in hits} <= {ids[f"r{i}"] for i in members}


async def test_when_other_filters_turn_down_the_nearest_every_keyed_clip_is_checked(
    database_factory, tmp_path, monkeypatch
):
    """Only the 5 farthest clips of the game pass the NSFW filter: the nearest ones checked
    first all fail, and the ranking checks every clip of the game before it answers."""
    url = database_factory.new(dimensions=384)
    rng = np.random.default_rng(7)
    vectors = _space_with_random_vectors(url, rng)
    rare = np.array([i for i in range(3000) if i % 50 == 7])
    query = rng.standard_normal(384).astype(np.float32)
    unit = vectors[rare] / np.linalg.norm(vectors[rare], axis=1, keepdims=True)
    order = np.argsort(-(unit @ (query / np.linalg.norm(query))))
    farthest = [f"r{rare[j]}" for j in order[-5:]]
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE clips SET is_nsfw = NOT (twitch_clip_id = ANY(%s))"
            " WHERE game_name = 'Rare Game'",
            (farthest,),
        )
    monkeypatch.setattr(filtered, "EXACT_MAX", 0)
    monkeypatch.setattr(filtered, "PROBE_MARGIN", 0)  # the first probe: the nearest 20
    filtered.forget()
    filters = clip_search.Filters(game="Rare Game")
    async with (
        runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r,
        r.pool.connection() as conn,
    ):
        corpus, ids = await _corpus_and_ids(r.pool, conn)
        hits = await core.semantic_branch(
            conn,
            corpus,
            query,
            filters.where(),
            core.Params(mode="semantic", limit=10),
            10,
            selective=True,
            keys=filters.keys(),
        )
    assert [h[0] for h in hits] == [ids[slug] for slug in farthest]


@pytest.mark.parametrize("game", ["Rare Game", "Nobody Plays This"])
async def test_search_filtered_by_game_returns_only_that_game(database_factory, tmp_path, game):
    """Through ``clip_search.similar`` (the route's own path): every hit is of the game."""
    url = database_factory.new(dimensions=384)
    _space_with_random_vectors(url, np.random.default_rng(6))
    async with runtime.open_runtime(_settings(url, tmp_path), with_service=False) as r:
        async with r.pool.connection() as conn:
            cur = await conn.execute("SELECT id FROM clips WHERE twitch_clip_id = 'r0'")
            (anchor,) = await cur.fetchone()
        filters = clip_search.Filters(game=game, include_nsfw=True)
        hits = await clip_search.similar(
            r.pool, anchor, params=core.Params(mode="semantic", limit=20), filters=filters
        )
    assert hits is not None
    assert len(hits) == (20 if game == "Rare Game" else 0)
    assert {h["game_name"] for h in hits} <= {"Rare Game"}
