"""The whole path with the bundled local model through the real command: no key, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clipembed import demo_data

pytestmark = pytest.mark.local_model


def test_import_backfill_search_with_the_local_model(database_factory, tmp_path):
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
        HF_HUB_OFFLINE="1",
    )
    path = tmp_path / "clips.jsonl"
    path.write_text(
        "\n".join(json.dumps(c, ensure_ascii=False) for c in demo_data.generate(60, seed=9)) + "\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clipembed", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert run("import", str(path)).returncode == 0
    out = run("backfill", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["processed"] == 60 and summary["estimated_cost_usd"] == 0
    answer = json.loads(run("search", "clutch", "--json", "--limit", "5").stdout)
    assert answer["space"]["name"] == "default" and answer["space"]["dimensions"] == 384
    results = answer["results"]
    assert results and all(r["rank"] == i for i, r in enumerate(results, start=1))
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["coverage_percentage"] == 100.0 and stats["by_model"] == {"all-MiniLM-L6-v2": 60}
