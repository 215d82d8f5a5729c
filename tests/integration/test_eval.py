"""The eval harness end to end on a tiny BEIR corpus with known answers."""

from __future__ import annotations

import json

import pytest

from clipembed import runtime, settings
from clipembed.search import beir
from tests.conftest import ROOT

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


def test_cli_eval(tmp_path, database_factory):
    import os
    import subprocess
    import sys

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_"))
    }
    env.update(
        DATABASE_URL=database_factory.new(dimensions=384),
        EMBEDDING_PROVIDER="local",
        REDIS_URL="none",
        CLIPEMBED_HOME=str(tmp_path),
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipembed",
            "eval",
            "beir",
            str(FIXTURE),
            "--mode",
            "keyword",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["modes"]) == {"keyword"}
    bad = subprocess.run(
        [sys.executable, "-m", "clipembed", "eval", "beir", str(FIXTURE), "--mode", "fuzzy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown mode" in bad.stderr
