"""Embedding spaces against real PostgreSQL, Redis and the fake provider over HTTP.

A model change from start to end in one process: a candidate space with another model,
dimensions and storage is added and filled; the worker writes new clips into both spaces;
promote switches every search to it at once (each response names its space) and rollback
switches back; the clips columns follow the active space where the dimensions allow; the active
space cannot be dropped. The migration of an existing installation is tested with its vectors.
"""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import clips, runtime, spaces
from clipembed.bulk import backfill
from clipembed.db import migrations
from clipembed.realtime import worker
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.spaces import mirror, registry
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.provider import subprocess_env
from tests.plugins.queue import clipembed_run, insert_clips

SMALL = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": 256}
HALF_TOLERANCE = 2e-3  # half precision keeps ~3 significant digits


def space_vectors(url: str, table: str) -> dict[str, tuple[np.ndarray, str]]:
    """twitch_clip_id -> (vector as float32, the clip's embedding text) for one space."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.execute(
            f"SELECT c.twitch_clip_id, e.embedding::vector, c.title, c.broadcaster_name,"
            f" c.creator_name, c.game_name FROM {table} e JOIN clips c ON c.id = e.clip_id"
        ).fetchall()
    return {r[0]: (r[1].to_numpy(), clips.embedding_text(clips.ClipText(*r[2:]))) for r in rows}


def scalar(url: str, query: str, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchone()[0]


async def add_space(url: str, name: str, **kw) -> spaces.Space:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await registry.add(conn, name, **{**SMALL, **kw})


async def search(rt: runtime.Runtime, mode: str = "semantic") -> clip_search.SearchOutcome:
    return await clip_search.search_detailed(
        rt.reader,
        rt.service_for,
        "clutch play",
        params=core.Params(mode=mode, limit=10),  # type: ignore[arg-type]
        filters=clip_search.Filters(),
    )


async def test_a_model_change_from_add_to_drop(openai_settings, database_url, tmp_path):
    await load_clips(database_url, [clip_record(i) for i in range(30)], tmp_path)
    cfg = openai_settings(database_url=database_url)
    async with runtime.open_runtime(cfg) as rt:
        assert (await backfill.run(rt)).processed == 30
        before = await search(rt)
    assert before.space["name"] == "default" and before.space["dimensions"] == 768

    small = await add_space(database_url, "small", storage="halfvec")
    assert (small.table_name, small.storage, small.active) == (
        "embeddings_space_2",
        "halfvec",
        False,
    )
    async with runtime.open_runtime(cfg, space="small") as rt:
        filled = await backfill.run(rt)
        assert (filled.processed, filled.space) == (30, "small")
        # the active space is untouched: search still reads the default space
        assert (await search(rt)).space["name"] == "default"
    vectors = space_vectors(database_url, small.table_name)
    assert len(vectors) == 30
    for vec, text in vectors.values():
        np.testing.assert_allclose(vec, expected_vector(text, 256), atol=HALF_TOLERANCE)

    # while both exist, the worker embeds a new clip into both
    async with runtime.open_runtime(cfg) as rt:
        insert_clips(database_url, 1, prefix="fresh")
        w = worker.Worker(rt, name="dual")
        assert await w.drain() is not None
        assert w.stats.embedded == 1 and w.stats.failed == 0
    for table, dims in (("embeddings_space_1", 768), (small.table_name, 256)):
        got = space_vectors(database_url, table)
        vec, text = next(v for k, v in got.items() if k.startswith("fresh"))
        np.testing.assert_allclose(vec, expected_vector(text, dims), atol=HALF_TOLERANCE)

    async with runtime.open_runtime(cfg) as rt:
        async with rt.pool.connection() as conn:
            await conn.set_autocommit(True)
            old, new = await registry.promote(conn, "small")
        assert (old.name, new.name) == ("default", "small")
        after = await search(rt)
        assert after.space == {
            "name": "small",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "dimensions": 256,
            "storage": "halfvec",
        }
        # the semantic ranking is the candidate's: the nearest of the query's 256-dim vector
        query = expected_vector("clutch play", 256)
        table = space_vectors(database_url, small.table_name)
        with psycopg.connect(database_url) as c:
            ids = dict(c.execute("SELECT twitch_clip_id, id FROM clips").fetchall())
        best = max(table, key=lambda k: float(np.dot(table[k][0], query)))
        assert after.results[0]["id"] == ids[best]
        hybrid = await search(rt, "hybrid")
        assert hybrid.space["name"] == "small" and hybrid.degraded == []

        # the clips columns hold the active space where its dimensions allow: 256 != 768
        report = await mirror.sync(rt.pool)
        assert (report.space, report.fits, report.changed) == ("small", False, 31)
        assert scalar(database_url, "SELECT count(embedding) FROM clips") == 0
        assert scalar(database_url, "SELECT count(*) FROM active_embeddings") == 31
        assert scalar(database_url, "SELECT min(dimensions) FROM active_embeddings") == 256

        async with rt.pool.connection() as conn:
            await conn.set_autocommit(True)
            with pytest.raises(spaces.SpaceError, match="active space"):
                await registry.drop(conn, "small")
            old, new = await registry.rollback(conn)
        assert (old.name, new.name) == ("small", "default")
        assert (await search(rt)).space["name"] == "default"
        paced: list[int] = []

        async def before_page(rows: int) -> None:  # the CLI's pace (jobs.pacing) goes here
            paced.append(rows)

        report = await mirror.sync(rt.pool, page=10, before_page=before_page)
        assert (report.fits, report.changed) == (True, 31)
        assert paced == [10] * (report.scanned_pages + 1)  # each page, and the empty last read
        assert scalar(database_url, "SELECT count(embedding) FROM clips") == 31
        assert (
            scalar(
                database_url,
                "SELECT count(*) FROM clips c JOIN embeddings_space_1 e ON e.clip_id = c.id "
                "WHERE c.embedding = e.embedding AND c.embedding_content_hash = e.content_hash",
            )
            == 31
        )

        async with rt.pool.connection() as conn:
            await conn.set_autocommit(True)
            await registry.drop(conn, "small")
            assert [s.name for s in await spaces.all_spaces(conn)] == ["default"]
            with pytest.raises(spaces.SpaceError, match="no previous space"):
                await registry.rollback(conn)
    assert scalar(database_url, "SELECT to_regclass('embeddings_space_2')") is None


async def test_a_space_with_the_same_dimensions_is_mirrored_into_the_clips_columns(
    openai_settings, database_url, tmp_path
):
    await load_clips(database_url, [clip_record(i) for i in range(5)], tmp_path)
    cfg = openai_settings(database_url=database_url)
    large = await add_space(
        database_url, "large", model="text-embedding-3-large", dimensions=768, storage="vector"
    )
    async with runtime.open_runtime(cfg, space="large") as rt:
        await backfill.run(rt)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await registry.promote(conn, "large")
    # a write to the active space is mirrored at once by the trigger...
    with psycopg.connect(database_url) as conn:
        conn.execute(f"UPDATE {large.table_name} SET generated_at = now()")
    models = scalar(
        database_url,
        "SELECT array_agg(DISTINCT embedding_model) FROM clips WHERE embedding IS NOT NULL",
    )
    assert models == ["text-embedding-3-large"]
    assert scalar(database_url, "SELECT count(embedding) FROM clips") == 5


async def test_workers_follow_a_promote_without_restarting(openai_settings, database_url, tmp_path):
    """A long-running worker reads the spaces per batch: one started before the candidate was
    added still writes new clips into it."""
    cfg = openai_settings(database_url=database_url)
    async with runtime.open_runtime(cfg) as rt:
        w = worker.Worker(rt, name="long-running")
        await add_space(database_url, "later")
        insert_clips(database_url, 3, prefix="after")
        await w.drain()
    assert len(space_vectors(database_url, "embeddings_space_2")) == 3
    assert len(space_vectors(database_url, "embeddings_space_1")) == 3


def test_check_new_refuses_what_cannot_work():
    bad = [
        ({"name": "Bad Name"}, "invalid space name"),
        ({"provider": "cohere"}, "unknown provider"),
        ({"storage": "bit"}, "unknown storage"),
        ({"dimensions": 3000, "storage": "vector"}, "cannot be indexed"),
        ({"dimensions": 4001, "storage": "halfvec"}, "cannot be indexed"),
        ({"model": "text-embedding-ada-002", "dimensions": 512}, "always returns 1536"),
        ({"model": "text-embedding-3-small", "dimensions": 2000}, "at most 1536"),
    ]
    for change, message in bad:
        args = {"name": "ok", **SMALL, "storage": "halfvec", **change}
        with pytest.raises(spaces.SpaceError, match=message):
            registry.check_new(**args)
    registry.check_new("ok-2", **SMALL, storage="halfvec")  # and a good one passes


async def test_migrating_an_installation_moves_its_vectors_without_re_embedding(
    database_factory, tmp_path
):
    """0009 up copies clips.embedding into the default space (same vectors, hashes, models);
    down puts the schema back with the vectors in the clips columns."""
    url = database_factory.new(migrated=False)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrations.up(conn, dimensions=8)
        await migrations.down(conn, to=8)
    await load_clips(url, [clip_record(i) for i in range(4)], tmp_path)
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute(
            "UPDATE clips SET embedding = array_fill(0.5, ARRAY[8])::vector, "
            "embedding_model = 'm', embedding_content_hash = 'h', embedding_generated_at = now() "
            "WHERE twitch_clip_id <> 'Clip0'"
        )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        applied = await migrations.up(conn, dimensions=8)
        # from 0009 (spaces) on, however many migrations came after it
        assert [m.version for m in applied] == [m.version for m in migrations.available()][8:]
    assert scalar(url, "SELECT count(*) FROM embeddings_space_1 WHERE model = 'm'") == 3
    assert scalar(url, "SELECT count(*) FROM embedding_queue") == 4  # untouched: the loads'
    assert scalar(url, "SELECT count(*) FROM active_embeddings") == 3
    assert scalar(url, "SELECT count(embedding) FROM clips") == 3
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrations.down(conn, to=8)
    assert scalar(url, "SELECT to_regclass('embedding_spaces')") is None
    assert scalar(url, "SELECT to_regclass('idx_clips_embedding_hnsw')") is not None
    assert scalar(url, "SELECT count(embedding) FROM clips WHERE embedding_model = 'm'") == 3


def cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    """The command's stdout (its stderr too when it is expected to fail)."""
    done = clipembed_run(env, *args)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout if code == 0 else done.stdout + done.stderr


async def test_the_cli_moves_to_a_self_hosted_model_and_back(
    fake_openai_factory, database_factory, redis_base_url, redis_prefix, tmp_path
):
    """Through the real commands, against an OpenAI-compatible server whose second model only
    gives its native 1,024 dimensions (and refuses the `dimensions` parameter)."""
    fake = fake_openai_factory(native_only_models={"bge-m3": 1024})
    url = database_factory.new(dimensions=768)
    await load_clips(url, [clip_record(i) for i in range(20)], tmp_path)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM embedding_queue")
    env = subprocess_env(
        database_url=url,
        base_url=fake.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "home",
        CLIPEMBED_LOG_LEVEL="WARNING",
    )
    cli(env, "backfill")

    wrong = cli(env, "model", "add", "bge", "--provider", "openai", "--model", "bge-m3",
                "--dimensions", "512", code=1)  # fmt: skip
    assert "1024" in wrong and "did not answer" in wrong
    assert "added" in cli(env, "model", "add", "bge", "--provider", "openai", "--model", "bge-m3",
                          "--dimensions", "1024")  # fmt: skip
    early = cli(env, "model", "promote", "bge", code=1)  # empty: search would lose every clip
    assert "20 live clips have a vector in the active space but none in 'bge'" in early
    summary = json.loads(cli(env, "model", "backfill", "bge", "--json").strip().splitlines()[-1])
    assert (summary["processed"], summary["failed"], summary["space"]) == (20, 0, "bge")

    insert_clips(url, 2, prefix="late")  # arrives after the backfill: the worker writes both
    cli(env, "worker", "--drain")
    listed = {s["name"]: s for s in json.loads(cli(env, "model", "list", "--json"))}
    assert listed["bge"]["missing"] == 0 and listed["bge"]["embedded"] == 22
    assert listed["bge"]["storage"] == "halfvec" and listed["bge"]["state"] == "candidate"
    assert listed["default"]["embedded"] == 22 and listed["default"]["state"] == "active"

    def searched() -> dict:
        return json.loads(cli(env, "search", "clutch play", "--mode", "semantic", "--json"))

    assert searched()["space"]["name"] == "default"
    assert "promoted 'bge'" in cli(env, "model", "promote", "bge")
    answer = searched()
    assert answer["space"] == {"name": "bge", "provider": "openai", "model": "bge-m3",
                               "dimensions": 1024, "storage": "halfvec"}  # fmt: skip
    assert len(answer["results"]) == 10  # the default limit
    assert scalar(url, "SELECT count(embedding) FROM clips") == 0  # 1024 does not fit vector(768)

    assert "rolled back to 'default'" in cli(env, "model", "rollback")
    assert searched()["space"]["name"] == "default"
    assert scalar(url, "SELECT count(embedding) FROM clips") == 22
    assert "active space" in cli(env, "model", "drop", "default", "--yes", code=1)
    cli(env, "model", "drop", "bge", "--yes")
    assert [s["name"] for s in json.loads(cli(env, "model", "list", "--json"))] == ["default"]


async def test_a_candidate_is_filled_at_half_price_through_the_batch_api(
    openai_settings, database_url, fake_openai, tmp_path
):
    """``model backfill NAME --via batch``: the batch belongs to the candidate, its vectors go
    to the candidate's table at the candidate's model and price, the active space is untouched."""
    from clipembed.batches.runner import BatchBackfill

    await load_clips(database_url, [clip_record(i) for i in range(15)], tmp_path)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM embedding_queue")
    large = await add_space(
        database_url, "large", model="text-embedding-3-large", dimensions=512, storage="halfvec"
    )
    cfg = openai_settings(database_url=database_url, embedding_batch_poll_seconds=0.05)
    async with runtime.open_runtime(cfg, space="large") as rt:
        summary = await BatchBackfill(rt).run()
    assert summary.applied == 15 and summary.open_batches == 0
    assert summary.cost_usd == pytest.approx(summary.sync_cost_usd / 2)
    # priced as text-embedding-3-large ($0.13 per million tokens, half in a batch)
    assert summary.sync_cost_usd == pytest.approx(summary.embedding.tokens * 0.13 / 1e6)
    assert scalar(database_url, "SELECT space_id FROM embedding_batches") == large.id
    vectors = space_vectors(database_url, large.table_name)
    assert len(vectors) == 15
    for vec, text in vectors.values():
        np.testing.assert_allclose(vec, expected_vector(text, 512), atol=HALF_TOLERANCE)
    assert scalar(database_url, "SELECT count(*) FROM embeddings_space_1") == 0
