"""``clipembed import --vectors FILE --space NAME`` against a real PostgreSQL.

Through the real CLI (in process): good and bad lines into a halfvec space of 256 dimensions
(another size than the database's 768), every bad line reported with its number and reason, the
good vectors stored as given, a re-import that changes nothing, ``--json``; and an import into
the active ``default`` space, mirrored into ``clips.embedding``. In process: Parquet, duplicate
lines, the candidate's index rebuilt once. The fake provider is running and must see nothing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from clipembed import clips, runtime
from clipembed.bulk import vector_import as vectors_mod
from clipembed.spaces import registry
from tests.plugins.jobs import clip_record, load_clips, write_jsonl
from tests.plugins.provider import subprocess_env
from tests.plugins.queue import clipembed_run

DIMS = 768  # the database's (the ``database_url`` fixture)
MODEL = "text-embedding-3-small"  # EMBEDDING_PROVIDER=openai's default, and the added spaces'
HALF_RTOL = 2.0**-11  # half precision's relative rounding error


def sql(url: str, statement: str, params: Any = ()) -> list[tuple[Any, ...]] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def clip_ids(url: str) -> dict[str, uuid.UUID]:
    """twitch_clip_id -> our id."""
    return dict(sql(url, "SELECT twitch_clip_id, id FROM clips") or [])


def stored(url: str, table: str) -> dict[uuid.UUID, tuple[np.ndarray, str, bytes]]:
    """A space's rows: clip_id -> (embedding as float32, model, content_hash)."""
    rows = sql(url, f"SELECT clip_id, embedding::vector::real[], model, content_hash FROM {table}")
    return {r[0]: (np.asarray(r[1], dtype=np.float32), r[2], bytes(r[3])) for r in rows or []}


def expected_hash(url: str, clip_id: uuid.UUID, dimensions: int) -> bytes:
    ((title, broadcaster, creator, game),) = sql(
        url,
        "SELECT title, broadcaster_name, creator_name, game_name FROM clips WHERE id = %s",
        (clip_id,),
    ) or [()]
    text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
    return clips.content_hash(text, MODEL, dimensions)


def index_exists(url: str, name: str) -> bool:
    return sql(url, "SELECT count(*) FROM pg_indexes WHERE indexname = %s", (name,)) == [(1,)]


async def add_space(url: str, name: str, *, dimensions: int, storage: str) -> registry.Space:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await registry.add(
            conn, name, provider="openai", model=MODEL, dimensions=dimensions, storage=storage
        )


def unit(rng: np.random.Generator, dimensions: int) -> np.ndarray:
    vec = rng.standard_normal(dimensions).astype(np.float32)
    return vec / np.linalg.norm(vec)


@pytest.fixture
async def db(database_url: str, tmp_path: Path) -> str:
    """The migrated 768-dimension database with six clips, Clip0..Clip5."""
    await load_clips(database_url, [clip_record(i) for i in range(6)], tmp_path)
    return database_url


@pytest.fixture
def env(db, fake_openai, redis_base_url, redis_prefix, tmp_path) -> dict[str, str]:
    return subprocess_env(
        database_url=db,
        base_url=fake_openai.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "home",
        CLIPEMBED_LOG_LEVEL="WARNING",
    )


async def test_cli_imports_the_good_lines_into_a_halfvec_space_and_reports_every_bad_one(
    db, env, fake_openai, tmp_path
):
    space = await add_space(db, "small", dimensions=256, storage="halfvec")
    assert (space.dimensions, space.storage, space.active) == (256, "halfvec", False)
    ids = clip_ids(db)
    sql(db, "UPDATE clips SET is_removed = true WHERE twitch_clip_id = 'Clip5'")
    rng = np.random.default_rng(20240118)
    good = {name: unit(rng, 256) * 3 for name in ("Clip0", "Clip1", "Clip2", "Clip3")}
    good["Clip3"][7] = -65504.0  # the edge of half precision's range is still accepted
    unknown = uuid.uuid4()

    def line(vec: np.ndarray | list[float], **key: str) -> str:
        values = vec.tolist() if isinstance(vec, np.ndarray) else vec
        return json.dumps({**key, "vector": values})

    zeros = [0.0] * 256
    lines = [
        line(good["Clip0"], clip_id=str(ids["Clip0"])),  # 1
        line(good["Clip1"], twitch_clip_id="Clip1"),  # 2
        "",  # 3: blank, skipped (still counted in the numbering)
        line([0.5] * 255, twitch_clip_id="Clip4"),  # 4
        json.dumps({"twitch_clip_id": "Clip4", "vector": [float("nan")] + [0.1] * 255}),  # 5
        line(zeros, twitch_clip_id="Clip4"),  # 6
        line([0.1] * 256, clip_id=str(unknown)),  # 7
        line([0.1] * 256, twitch_clip_id="NoSuchClip"),  # 8
        line([0.1] * 256, clip_id="Clip4"),  # 9: a Twitch id where our uuid goes
        '{"twitch_clip_id": "Clip4", "vector": [0.1, ',  # 10: cut off
        json.dumps({"twitch_clip_id": "Clip4", "embedding": [0.1] * 256}),  # 11
        json.dumps([str(ids["Clip4"]), [0.1] * 256]),  # 12
        line([70000.0] + [0.1] * 255, twitch_clip_id="Clip4"),  # 13
        line([0.1] * 256, twitch_clip_id="Clip5"),  # 14: removed
        line(good["Clip2"], clip_id=str(ids["Clip2"]), twitch_clip_id="Clip0"),  # 15
        line(good["Clip3"], twitch_clip_id=" Clip3 "),  # 16
    ]
    assert "NaN" in lines[4]  # the literal token, as Python's json writes and reads it
    path = write_jsonl(tmp_path / "vectors.jsonl", lines)

    done = clipembed_run(env, "import", "--vectors", str(path), "--space", "small")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.strip() == "imported 4 vectors into 'small', 11 bad lines"
    reported = [ln for ln in done.stderr.splitlines() if ln.startswith("line ")]
    assert "Traceback" not in done.stderr
    expected = {
        4: "the vector has 255 dimensions, the space 256",
        5: "the vector holds NaN or infinity",
        6: "the vector is all zeros in its storage precision (no direction: cosine distance is undefined)",
        7: f"no clip with clip_id {unknown}",
        8: "no clip with twitch_clip_id 'NoSuchClip'",
        9: "clip_id 'Clip4' is not a uuid",
        11: "no 'vector'",
        12: "not a JSON object",
        13: "a value is beyond half precision's range (65504): use vector storage",
        14: "the clip is removed",
    }
    by_line = {int(ln.split(":")[0].removeprefix("line ")): ln.split(": ", 1)[1] for ln in reported}
    assert len(reported) == len(by_line) == 11, done.stderr
    assert set(by_line) == {*expected, 10}
    assert by_line[10].startswith("not JSON (")
    assert {n: by_line[n] for n in expected} == expected

    rows = stored(db, space.table_name)
    assert set(rows) == {ids[n] for n in good}
    for name, vec in good.items():
        embedding, model, digest = rows[ids[name]]
        assert embedding.shape == (256,)
        np.testing.assert_allclose(embedding, vec, rtol=HALF_RTOL, atol=2.0**-24)
        assert model == MODEL
        assert digest == expected_hash(db, ids[name], 256)
    assert rows[ids["Clip3"]][0][7] == -65504.0
    # not the default space, whose table and the clips' mirror stay empty
    assert sql(db, "SELECT count(*) FROM embeddings_space_1") == [(0,)]
    assert sql(db, "SELECT count(*) FROM clips WHERE embedding IS NOT NULL") == [(0,)]
    assert index_exists(db, space.index_name)  # dropped for the load, built again once

    # the same file again, as JSON: the same counts, the same rows
    again = clipembed_run(env, "import", "--vectors", str(path), "--space", "small", "--json")
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert not [ln for ln in again.stderr.splitlines() if ln.startswith("line ")]
    report = json.loads(again.stdout.strip().splitlines()[-1])
    bad = report.pop("bad")
    assert report == {
        "space": "small",
        "read": 15,
        "imported": 4,
        "superseded": 0,
        "duplicates": 0,
        "bad_count": 11,
        "index_rebuilt": True,
    }
    # (lines naming no clip are found when their chunk is written: after the others)
    assert sorted(b["line"] for b in bad) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert {b["line"]: b["reason"] for b in bad if b["line"] != 10} == expected
    assert {b["line"]: b["reason"] for b in bad} == by_line
    rows_again = stored(db, space.table_name)
    assert set(rows_again) == set(rows)
    for cid, (embedding, model, digest) in rows.items():
        np.testing.assert_array_equal(rows_again[cid][0], embedding)
        assert rows_again[cid][1:] == (model, digest)

    assert fake_openai.stats()["requests"] == 0  # no provider was asked for anything


async def test_cli_import_into_the_active_default_space_is_mirrored_into_clips(
    db, env, fake_openai, tmp_path
):
    ids = clip_ids(db)
    queued = {r[0] for r in sql(db, "SELECT clip_id FROM embedding_queue") or []}
    assert queued == set(ids.values())  # every loaded clip waits for its embedding
    rng = np.random.default_rng(7)
    given = {name: rng.standard_normal(DIMS).astype(np.float32) for name in ("Clip1", "Clip4")}
    given["Clip2"] = np.linspace(-1.0, 1.0, DIMS, dtype=np.float32)
    path = write_jsonl(
        tmp_path / "default.jsonl",
        [
            {"clip_id": str(ids["Clip1"]), "vector": given["Clip1"].tolist()},
            {"twitch_clip_id": "Clip2", "vector": given["Clip2"].tolist()},
            {"twitch_clip_id": "Clip4", "vector": given["Clip4"].tolist()},
        ],
    )

    done = clipembed_run(env, "import", "--vectors", str(path), "--space", "default")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.strip() == "imported 3 vectors into 'default', 0 bad lines"
    assert done.stderr.strip() == ""

    rows = stored(db, "embeddings_space_1")
    assert set(rows) == {ids[n] for n in given}
    for name, vec in given.items():
        embedding, model, digest = rows[ids[name]]
        np.testing.assert_array_equal(embedding, vec)  # single precision: exactly as given
        assert model == MODEL and digest == expected_hash(db, ids[name], DIMS)

    mirrored = {
        r[0]: r[1:]
        for r in sql(
            db,
            "SELECT id, embedding::real[], embedding_model, embedding_content_hash "
            "FROM clips WHERE embedding IS NOT NULL",
        )
        or []
    }
    assert set(mirrored) == {ids[n] for n in given}
    for name, vec in given.items():
        embedding, model, digest = mirrored[ids[name]]
        np.testing.assert_array_equal(np.asarray(embedding, dtype=np.float32), vec)
        assert model == MODEL and bytes(digest) == expected_hash(db, ids[name], DIMS)

    # the only space: the queue's items for these texts are done, the others still wait
    left = {r[0] for r in sql(db, "SELECT clip_id FROM embedding_queue") or []}
    assert left == set(ids.values()) - {ids[n] for n in given}
    assert index_exists(db, "embeddings_space_1_hnsw")
    assert fake_openai.stats()["requests"] == 0


@pytest.fixture
def vectors_runtime(db, openai_settings):
    """``open_for(space)``: a runtime (no embedding service) on ``db`` writing ``space``."""

    def open_for(space: str):
        return runtime.open_runtime(
            openai_settings(database_url=db), with_service=False, space=space
        )

    return open_for


async def import_into(open_for, space: str, path: Path) -> vectors_mod.ImportReport:
    async with open_for(space) as rt:
        target = rt.require_space()
        return await vectors_mod.import_vectors(
            rt.pool, path, space=target, model=target.model_for(rt.settings)
        )


async def test_parquet_into_a_vector_candidate_with_a_duplicate_line(
    db, vectors_runtime, fake_openai, tmp_path
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    space = await add_space(db, "vec32", dimensions=32, storage="vector")
    ids = clip_ids(db)
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((4, 32)).astype(np.float32)
    table = pa.table(
        {
            "clip_id": [str(ids["Clip0"]), None, str(ids["Clip0"]), None],
            "twitch_clip_id": [None, "Clip1", None, "Clip9"],
            "vector": pa.array([v.tolist() for v in vecs], type=pa.list_(pa.float32())),
        }
    )
    path = tmp_path / "vectors.parquet"
    pq.write_table(table, path)

    report = await import_into(vectors_runtime, "vec32", path)
    assert (report.read, report.imported, report.duplicates) == (4, 2, 1)
    assert report.bad == [(4, "no clip with twitch_clip_id 'Clip9'")] and report.bad_count == 1
    assert report.index_rebuilt is True and index_exists(db, space.index_name)
    rows = stored(db, space.table_name)
    assert set(rows) == {ids["Clip0"], ids["Clip1"]}
    np.testing.assert_array_equal(rows[ids["Clip0"]][0], vecs[2])  # the later line wins
    np.testing.assert_array_equal(rows[ids["Clip1"]][0], vecs[1])
    assert fake_openai.stats()["requests"] == 0


async def test_the_active_space_keeps_its_index_and_a_reimport_replaces_the_vectors(
    db, vectors_runtime, tmp_path
):
    ids = clip_ids(db)
    first = np.full(DIMS, 0.5, dtype=np.float32)
    second = np.full(DIMS, -0.25, dtype=np.float32)
    for vec in (first, second):
        path = write_jsonl(
            tmp_path / "v.jsonl", [{"twitch_clip_id": "Clip0", "vector": vec.tolist()}]
        )
        report = await import_into(vectors_runtime, "default", path)
        assert (report.read, report.imported, report.bad_count) == (1, 1, 0)
        assert report.index_rebuilt is False
        rows = stored(db, "embeddings_space_1")
        assert set(rows) == {ids["Clip0"]}
        np.testing.assert_array_equal(rows[ids["Clip0"]][0], vec)
        ((mirror,),) = sql(db, "SELECT embedding::real[] FROM clips WHERE id = %s", (ids["Clip0"],))
        np.testing.assert_array_equal(np.asarray(mirror, dtype=np.float32), vec)


async def test_an_unknown_space_is_an_error_naming_it(env, tmp_path):
    path = write_jsonl(tmp_path / "v.jsonl", [{"twitch_clip_id": "Clip0", "vector": [1.0]}])
    done = clipembed_run(env, "import", "--vectors", str(path), "--space", "nope")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "no embedding space named 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
async def test_a_value_beyond_single_precision_is_a_bad_line_not_a_failed_import(
    db, vectors_runtime, tmp_path
):
    await add_space(db, "vec4", dimensions=4, storage="vector")
    path = write_jsonl(
        tmp_path / "v.jsonl",
        [
            {"twitch_clip_id": "Clip0", "vector": [1.0, 2.0, 3.0, 4.0]},
            {"twitch_clip_id": "Clip1", "vector": [1e39, 2.0, 3.0, 4.0]},
        ],
    )
    report = await import_into(vectors_runtime, "vec4", path)
    assert report.imported == 1 and [n for n, _ in report.bad] == [2]


async def test_an_integer_too_large_for_a_float_is_a_bad_line(db, vectors_runtime, tmp_path):
    await add_space(db, "vec4", dimensions=4, storage="vector")
    path = write_jsonl(
        tmp_path / "v.jsonl",
        [
            '{"twitch_clip_id": "Clip0", "vector": [1, 2, 3, 4]}',
            '{"twitch_clip_id": "Clip1", "vector": [1' + "0" * 400 + ", 2, 3, 4]}",
        ],
    )
    report = await import_into(vectors_runtime, "vec4", path)
    assert report.imported == 1 and [n for n, _ in report.bad] == [2]


async def test_values_that_round_to_zero_in_half_precision_are_all_zeros(
    db, vectors_runtime, tmp_path
):
    space = await add_space(db, "half4", dimensions=4, storage="halfvec")
    path = write_jsonl(tmp_path / "v.jsonl", [{"twitch_clip_id": "Clip0", "vector": [1e-10] * 4}])
    report = await import_into(vectors_runtime, "half4", path)
    rows = stored(db, space.table_name)
    assert report.bad_count == 1 and "all zeros" in report.bad[0][1], (report, rows)
    assert rows == {}
