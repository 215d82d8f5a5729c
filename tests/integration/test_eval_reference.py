"""The eval harness's reference BM25 and keyword-only path, dataset errors, and BM25 statistics
that must never leak between databases or lag behind the first documents."""

from __future__ import annotations

import json
import math
import os

import pytest

from clipembed import runtime, settings
from clipembed.eval import beir
from clipembed.eval import reference as reference_mod
from clipembed.search import clips as clip_search
from clipembed.search import core
from tests.conftest import ROOT
from tests.plugins.queue import clipembed_run

FIXTURE = ROOT / "tests" / "fixtures" / "beir_small"


def config(url, tmp_path) -> settings.Settings:
    return settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
    )


async def test_keyword_only_evaluation_with_reference_needs_no_model(database_factory, tmp_path):
    pytest.importorskip("bm25s")
    url = database_factory.new(dimensions=384)
    data = beir.load(FIXTURE)
    async with runtime.open_runtime(config(url, tmp_path), with_service=False) as rt:
        timings = await beir.prepare(rt.pool, data, None, dimensions=rt.dimensions)
        report = await beir.evaluate(rt.pool, data, None, modes=["keyword"])
        with pytest.raises(ValueError, match="embedding service"):
            await beir.evaluate(rt.pool, data, None, modes=["hybrid"])
    assert timings["embedded_documents"] == 0 and report["model"] is None
    keyword = report["modes"]["keyword"]
    reference = beir.reference_bm25(data)
    # q1 "vitamin D bone density": d1 (title and text) first, d8 (vitamin D) second, both
    # relevant -> nDCG 1; q2: d2 alone -> 1; q3 matches d5 only on "depression" -> 1.
    assert keyword["ndcg@10"] == pytest.approx(1.0)
    assert keyword["recall@100"] == pytest.approx(1.0)
    assert reference["ndcg@10"] == pytest.approx(1.0) and reference["recall@100"] == 1.0
    assert (
        reference["k1"] == reference_mod.REFERENCE_K1
        and reference["b"] == reference_mod.REFERENCE_B
    )


def _cli(args, env):
    return clipembed_run(env, "eval", "beir", *args)


def test_cli_reports_reference_and_verdict_and_refuses_bad_directories(database_factory, tmp_path):
    pytest.importorskip("bm25s")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_", "REDIS_", "DATABASE_"))
    }
    env.update(
        DATABASE_URL=database_factory.new(dimensions=384),
        EMBEDDING_PROVIDER="local",
        REDIS_URL="none",
        CLIPEMBED_HOME=str(tmp_path),
    )
    out = _cli([str(FIXTURE), "--mode", "keyword", "--json"], env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["reference"]["ndcg@10"] == pytest.approx(1.0)
    assert report["verdict"] == {"keyword_minus_reference_bm25": 0.0}

    broken = tmp_path / "broken"
    (broken / "qrels").mkdir(parents=True)
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "title": "t", "text": "x"}\n{oops\n')
    (broken / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (broken / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    out = _cli([str(broken), "--mode", "keyword"], env)
    assert out.returncode == 2 and "corpus.jsonl:2: not a BEIR record" in out.stderr
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "title": "t", "text": "x"}\n')
    (broken / "qrels" / "test.tsv").unlink()
    out = _cli([str(broken), "--mode", "keyword"], env)
    assert out.returncode == 2 and "no qrels/test.tsv" in out.stderr
    out = _cli([str(tmp_path / "missing"), "--mode", "keyword"], env)
    assert out.returncode == 2


INSERT = """
INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
                   broadcaster_name, created_at)
VALUES (%s, 'u', 'e', %s, 'c', 'b', now())
"""


async def test_bm25_statistics_follow_each_database_and_the_first_documents(
    database_factory, tmp_path
):
    """No clear_stats_cache() here on purpose: the cache must be right by itself."""
    first, second = database_factory.new(dimensions=384), database_factory.new(dimensions=384)
    async with (
        runtime.open_runtime(config(first, tmp_path), with_service=False) as a,
        runtime.open_runtime(config(second, tmp_path), with_service=False) as b,
    ):

        async def keyword(rt, q):
            return await clip_search.search(
                rt.pool,
                None,
                q,
                params=core.Params(mode="keyword"),
                filters=clip_search.Filters(),
            )

        assert await keyword(a, "clutch") == []  # empty corpus: nothing, and nothing cached
        async with a.pool.connection() as conn:
            await conn.execute(INSERT, ("a1", "Insane clutch"))
        assert [r["title"] for r in await keyword(a, "clutch")] == ["Insane clutch"]

        async with b.pool.connection() as conn:
            for i in range(50):
                await conn.execute(INSERT, (f"b{i}", f"filler words number {i}"))
            await conn.execute(INSERT, ("b-clutch", "clutch"))
        # the second database has N=51, not the first database's N=1 (idf would be ln(1.2))
        hits = await keyword(b, "clutch")
        assert [r["title"] for r in hits] == ["clutch"]
        n, df = 51, 1
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        assert hits[0]["keyword"]["score"] > idf  # a title match of a short clip: tf > 1


async def test_bulk_postings_equal_what_the_trigger_writes(database_factory, tmp_path):
    """prepare() builds postings set-based (its tables have no trigger); inserting the same
    documents through the product's row trigger must give exactly the same rows."""
    import shutil

    directory = tmp_path / "beir_bulk"
    shutil.copytree(FIXTURE, directory)
    extra = [
        {"_id": "empty", "title": "", "text": "the of and"},
        {"_id": "rep", "title": "Clutch clutch", "text": "clutch " * 50},
    ]
    corpus_file = directory / "corpus.jsonl"
    corpus_file.write_text(
        corpus_file.read_text(encoding="utf-8") + "".join(json.dumps(d) + "\n" for d in extra),
        encoding="utf-8",
    )
    data = beir.load(directory)
    corpus = beir.corpus_for(data.name)
    url = database_factory.new(dimensions=384)
    async with runtime.open_runtime(config(url, tmp_path), with_service=False) as rt:
        await beir.prepare(rt.pool, data, None, dimensions=rt.dimensions)
        async with rt.pool.connection() as conn:
            docs, postings, doclen = corpus.table, corpus.postings, corpus.doclen
            # the trigger function names its tables unqualified: resolve them in the eval schema
            await conn.execute(f"SET search_path = {beir.SCHEMA_NAME}, public")
            await conn.execute(
                f"CREATE TRIGGER product_postings AFTER INSERT ON {docs} FOR EACH ROW "
                f"EXECUTE FUNCTION clipembed_postings_update('{postings}', '{doclen}')"
            )
            await conn.execute(f"CREATE TEMP TABLE bulk_p AS SELECT * FROM {postings}")
            await conn.execute(f"CREATE TEMP TABLE bulk_l AS SELECT * FROM {doclen}")
            await conn.execute(f"CREATE TEMP TABLE copy_d AS SELECT id, title, body FROM {docs}")
            await conn.execute(f"DELETE FROM {docs}")
            await conn.execute(f"INSERT INTO {docs} (id, title, body) SELECT * FROM copy_d")
            for table, bulk in ((postings, "bulk_p"), (doclen, "bulk_l")):
                for a, b in ((table, bulk), (bulk, table)):
                    cur = await conn.execute(
                        f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) x"
                    )
                    assert (await cur.fetchone())[0] == 0, (a, b)
            cur = await conn.execute(f"SELECT len_a, len_d FROM {doclen} WHERE doc_id = 'empty'")
            assert await cur.fetchone() == (0, 0)  # counted in N, with no length
            cur = await conn.execute(
                f"SELECT tf_a, tf_d FROM {postings} WHERE doc_id = 'rep' AND lexeme = 'clutch'"
            )
            assert await cur.fetchone() == (2, 50)


async def test_a_query_never_retrieves_its_own_document(database_factory, tmp_path):
    """BEIR's ignore_identical_ids: in ArguAna each query is also a corpus document."""
    pytest.importorskip("bm25s")
    data = beir.Dataset(
        name="ident",
        corpus={
            "arg1": ("Vitamin D", "vitamin D protects bone density"),
            "arg2": ("Counter", "vitamin D does not protect bone density in adults"),
            "arg3": ("Other", "aspirin and heart attacks"),
        },
        queries={"arg1": "vitamin D protects bone density"},
        qrels={"arg1": {"arg2": 1}},
    )
    url = database_factory.new(dimensions=384)
    async with runtime.open_runtime(config(url, tmp_path), with_service=False) as rt:
        await beir.prepare(rt.pool, data, None, dimensions=rt.dimensions)
        report = await beir.evaluate(rt.pool, data, None, modes=["keyword"])
    assert report["modes"]["keyword"]["ndcg@10"] == pytest.approx(1.0)  # arg1 itself dropped
    assert beir.reference_bm25(data)["ndcg@10"] == pytest.approx(1.0)
