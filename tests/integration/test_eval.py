"""The eval harness end to end on a tiny BEIR corpus with known answers."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from psycopg import sql

from clipembed import runtime, settings
from clipembed.eval import beir
from tests.conftest import ROOT
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.queue import clipembed_run

pytestmark = pytest.mark.local_model

FIXTURE = ROOT / "tests" / "fixtures" / "beir_small"


async def test_harness_scores_known_answers(
    database_factory, redis_base_url, redis_prefix, tmp_path
):
    url = database_factory.new(dimensions=384)
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        database_url=url,
        redis_url=redis_base_url,
        redis_key_prefix=redis_prefix,
        clipembed_home=tmp_path,
    )
    data = beir.load(FIXTURE)
    async with runtime.open_runtime(cfg) as rt:
        svc = rt.require_service()
        timings = await beir.prepare(rt.pool, data, svc)
        assert timings["embedded_documents"] == 8
        report = await beir.evaluate(rt.pool, data, svc)
        again = await beir.prepare(rt.pool, data, svc)
        assert again["embedded_documents"] == 0  # already embedded: nothing to do
    modes = report["modes"]
    # q1 and q2 are lexical matches; q3 ("physical activity ... depression") shares one word
    assert modes["keyword"]["recall@100"] == pytest.approx(1.0)
    assert modes["semantic"]["ndcg@10"] > 0.9
    assert modes["hybrid"]["ndcg@10"] > 0.9
    assert report["queries"] == 3 and report["documents"] == 8
    json.dumps(report)  # the CLI prints it as JSON


def production_snapshot(url: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of the contents of every table outside the eval schema."""
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', %s) ORDER BY 1",
                (beir.SCHEMA_NAME,),
            )
        ]
        out = {}
        for table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
                " FROM {} t"
            ).format(sql.SQL(table))
            out[table] = conn.execute(query).fetchone()
        return out


async def test_cli_eval_leaves_the_product_tables_untouched(tmp_path, database_factory):
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_"))
    }
    url = database_factory.new(dimensions=384)
    await load_clips(url, [clip_record(i) for i in range(25)], tmp_path)
    before = production_snapshot(url)
    assert before["public.clips"][0] == 25 and before["public.clip_postings"][0] > 0
    env.update(
        DATABASE_URL=url,
        EMBEDDING_PROVIDER="local",
        REDIS_URL="none",
        CLIPEMBED_HOME=str(tmp_path),
    )
    out = await asyncio.to_thread(
        clipembed_run, env, "eval", "beir", str(FIXTURE), "--mode", "keyword", "--json"
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["modes"]) == {"keyword"}
    assert production_snapshot(url) == before
    bad = await asyncio.to_thread(
        clipembed_run, env, "eval", "beir", str(FIXTURE), "--mode", "fuzzy"
    )
    assert bad.returncode == 2 and "unknown mode" in bad.stderr
