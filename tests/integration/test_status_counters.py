"""The trigger-kept counters behind /status equal count(*) after any mix of writes, and the
migration that creates them counts the clips that exist already; 0005 re-indexes old clips
without re-embedding them."""

from __future__ import annotations

import random

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from clipembed.db import migrations
from tests.plugins.jobs import clip_record, load_clips

COUNTERS = """
SELECT coalesce(sum(live) FILTER (WHERE model = ''), 0), coalesce(sum(removed) FILTER (WHERE model = ''), 0),
       coalesce(sum(embedded) FILTER (WHERE model = 'm1'), 0), coalesce(sum(embedded) FILTER (WHERE model = 'm2'), 0)
FROM clipembed_counters
"""
TRUTH = """
SELECT count(*) FILTER (WHERE NOT is_removed), count(*) FILTER (WHERE is_removed),
       count(*) FILTER (WHERE NOT is_removed AND embedding IS NOT NULL AND embedding_model = 'm1'),
       count(*) FILTER (WHERE NOT is_removed AND embedding IS NOT NULL AND embedding_model = 'm2')
FROM clips
"""


def vector():
    v = np.random.default_rng().random(768).astype(np.float32)
    return v / np.linalg.norm(v)


async def test_counters_equal_counts_after_random_writes(database_factory, tmp_path):
    url = database_factory.new(dimensions=768)
    await load_clips(url, [clip_record(i) for i in range(40)], tmp_path)
    rng = random.Random(11)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        assert conn.execute(COUNTERS).fetchone() == conn.execute(TRUTH).fetchone()
        ids = [r[0] for r in conn.execute("SELECT id FROM clips")]
        for step in range(300):
            target = rng.sample(ids, rng.randint(1, 5))
            kind = rng.choice(["embed", "unembed", "remove", "restore", "model", "delete", "edit"])
            if kind == "embed":
                for i in target:
                    conn.execute(
                        "UPDATE clips SET embedding = %s, embedding_model = %s WHERE id = %s",
                        (vector(), rng.choice(["m1", "m2"]), i),
                    )
            elif kind == "unembed":
                conn.execute("UPDATE clips SET embedding = NULL WHERE id = ANY(%s)", (target,))
            elif kind == "remove":
                conn.execute("UPDATE clips SET is_removed = true WHERE id = ANY(%s)", (target,))
            elif kind == "restore":
                conn.execute("UPDATE clips SET is_removed = false WHERE id = ANY(%s)", (target,))
            elif kind == "model":
                conn.execute(
                    "UPDATE clips SET embedding_model = 'm2' WHERE id = ANY(%s)", (target,)
                )
            elif kind == "edit":
                conn.execute("UPDATE clips SET title = title || '!' WHERE id = ANY(%s)", (target,))
            elif kind == "delete" and len(ids) > 10:
                conn.execute("DELETE FROM clips WHERE id = ANY(%s)", (target,))
                ids = [i for i in ids if i not in target]
            assert conn.execute(COUNTERS).fetchone() == conn.execute(TRUTH).fetchone(), (step, kind)


async def test_the_migration_counts_existing_clips_and_0005_keeps_their_vectors(
    database_factory, tmp_path
):
    url = database_factory.new(dimensions=768)
    records = [clip_record(i) for i in range(15)]
    records[3] = clip_record(3, title="変装で警察を欺く", language="ja")
    await load_clips(url, records, tmp_path)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(
            "UPDATE clips SET embedding = %s, embedding_model = 'm1' WHERE twitch_clip_id < 'Clip5'",
            (vector(),),
        )
        conn.execute("UPDATE clips SET is_removed = true WHERE twitch_clip_id = 'Clip14'")
        conn.execute("DELETE FROM embedding_queue")
        before = conn.execute("SELECT id, embedding FROM clips ORDER BY id").fetchall()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:
        await migrations.down(aconn, to=4)
        await migrations.up(aconn, dimensions=768)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        assert conn.execute(COUNTERS).fetchone() == conn.execute(TRUTH).fetchone()
        after = conn.execute("SELECT id, embedding FROM clips ORDER BY id").fetchall()
        assert [(i, None if e is None else e.to_list()) for i, e in before] == [
            (i, None if e is None else e.to_list()) for i, e in after
        ]
        assert conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0] == 0
        # 0005 re-analysed the clips that existed before it (down to 4 dropped the bigrams)
        lexemes = {
            r[0]
            for r in conn.execute(
                "SELECT lexeme FROM clip_postings p JOIN clips c ON c.id = p.doc_id "
                "WHERE c.twitch_clip_id = 'Clip3'"
            )
        }
        assert {"変装", "警察"} <= lexemes
