"""``clipembed embed`` (the real command, in process) against the fake provider and a real Redis.

No database is involved: DATABASE_URL points at a closed port to prove the command never
touches it.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from clipembed.testing import servers
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.provider import TEST_KEY
from tests.plugins.queue import clipembed_run


@pytest.fixture
def run_embed(fake_openai, redis_base_url, redis_prefix, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_", "REDIS_", "DATABASE_"))
    }
    env.update(
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY=TEST_KEY,
        EMBEDDING_API_BASE_URL=fake_openai.base_url,
        EMBEDDING_DIMENSIONS="256",
        REDIS_URL=redis_base_url,
        CLIPEMBED_REDIS_PREFIX=redis_prefix,
        CLIPEMBED_HOME=str(tmp_path / "home"),
        DATABASE_URL=f"postgresql://nobody:pw@127.0.0.1:{servers.free_port()}/none",
        CLIPEMBED_LOG_LEVEL="DEBUG",
    )

    def run(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        out = clipembed_run(dict(env, **extra), "embed", *args, input=stdin)
        assert TEST_KEY not in out.stdout + out.stderr
        return out

    return run


def test_json_then_plain_from_cache_with_no_second_request(run_embed, fake_openai):
    texts = ["Title: Insane clutch!. Broadcaster: s1mple", "神プレイすぎる"]
    first = run_embed(*texts, "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert [d["text"] for d in doc] == texts
    assert [d["dimensions"] for d in doc] == [256, 256]
    assert [d["cached"] for d in doc] == [False, False]
    for d in doc:
        np.testing.assert_allclose(d["embedding"], expected_vector(d["text"], 256), rtol=1e-6)
    stats = fake_openai.stats()
    assert (stats["requests"], stats["dimensions_seen"]) == (1, [256])

    second = run_embed(*texts)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, texts, strict=True):
        head = f"{expected_vector(text, 256)[0]:.4f}"
        assert "256 dims" in line and "from cache" in line and head in line
    assert fake_openai.stats()["requests"] == 1


def test_stdin_one_text_per_line(run_embed, fake_openai):
    out = run_embed("--stdin", "--json", stdin="one\ntwo\n\n  \nthree\n")
    assert out.returncode == 0, out.stderr
    assert [d["text"] for d in json.loads(out.stdout)] == ["one", "two", "three"]
    assert fake_openai.stats()["inputs"] == 3


def test_exit_codes(run_embed, fake_openai):
    assert run_embed().returncode == 2  # nothing to embed
    bad_config = run_embed("x", EMBEDDING_DIMENSIONS="4000")
    assert bad_config.returncode == 2 and "error:" in bad_config.stderr
    assert fake_openai.stats()["requests"] == 0
    fake_openai.control(api_key="sk-someone-else-000000000")
    refused = run_embed("x")
    assert refused.returncode == 1
    assert "401" in refused.stdout + refused.stderr
