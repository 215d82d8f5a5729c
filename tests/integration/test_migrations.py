"""Migrations against a real PostgreSQL + pgvector: up, down, up; concurrency; the schema."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from clipembed import errors
from clipembed.db import migrations


async def _connect(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def _columns(conn) -> dict[str, str]:
    cur = await conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           WHERE a.attrelid = 'clips'::regclass AND a.attnum > 0 AND NOT a.attisdropped"""
    )
    return dict(await cur.fetchall())


async def _indexes(conn, table: str = "clips") -> dict[str, str]:
    cur = await conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)
    )
    return dict(await cur.fetchall())


async def test_up_down_up(database_factory):
    url = database_factory.new(migrated=False)
    async with await _connect(url) as conn:
        applied = await migrations.up(conn, dimensions=768)
        assert [m.version for m in applied] == [m.version for m in migrations.available()]
        cols = await _columns(conn)
        assert cols["embedding"] == "vector(768)"
        assert cols["embedding_model"] == "character varying(100)"
        assert cols["embedding_generated_at"] == "timestamp with time zone"
        assert cols["embedding_content_hash"] == "bytea"
        # the vectors live in the default space's table, with its HNSW index (migration 0009)
        assert "idx_clips_embedding_hnsw" not in await _indexes(conn)
        hnsw = (await _indexes(conn, "embeddings_space_1"))["embeddings_space_1_hnsw"]
        assert "hnsw (embedding vector_cosine_ops)" in hnsw
        assert "m='16'" in hnsw and "ef_construction='64'" in hnsw

        # down to the clips table only: embedding columns and index gone, extension kept
        await migrations.down(conn, to=1)
        cols = await _columns(conn)
        assert "embedding" not in cols and "title" in cols
        assert "idx_clips_embedding_hnsw" not in await _indexes(conn)
        cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        assert await cur.fetchone() is not None

        await migrations.down(conn, to=0, drop_clips=True)
        cur = await conn.execute("SELECT to_regclass('clips')")
        assert (await cur.fetchone())[0] is None

        again = await migrations.up(conn, dimensions=384)
        assert len(again) == len(migrations.available())
        assert (await _columns(conn))["embedding"] == "vector(384)"
        assert await migrations.up(conn, dimensions=384) == []


async def test_concurrent_up_applies_each_migration_once(database_factory):
    url = database_factory.new(migrated=False)
    conns = [await _connect(url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.up(c, dimensions=768) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [m.version for r in results for m in r]
    assert sorted(applied) == [m.version for m in migrations.available()]
    async with await _connect(url) as conn:
        statuses = await migrations.status(conn)
        assert all(s.applied for s in statuses)


async def test_search_vector_trigger_weights(database_url):
    async with await _connect(database_url) as conn:
        await conn.execute(
            """INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
               broadcaster_name, game_name, created_at)
               VALUES ('x', 'u', 'e', 'Clutch', 'maker', 'streamer', 'Valorant', now())"""
        )
        cur = await conn.execute("SELECT search_vector::text FROM clips")
        vector = (await cur.fetchone())[0]
        assert "'clutch':1A" in vector
        assert "'maker':2B" in vector and "'streamer':3B" in vector
        assert "'valor':4C" in vector


async def test_check_current_reports_dimension_mismatch(database_url):
    async with await _connect(database_url) as conn:
        await migrations.check_current(conn, dimensions=768)
        with pytest.raises(errors.SchemaError, match=r"vector\(768\).*384"):
            await migrations.check_current(conn, dimensions=384)


async def test_check_current_reports_pending(database_factory):
    url = database_factory.new(migrated=False)
    async with await _connect(url) as conn:
        with pytest.raises(errors.SchemaError, match="migrate up"):
            await migrations.check_current(conn, dimensions=768)
