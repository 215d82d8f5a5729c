"""``make demo`` (python -m clipembed.demo) end to end, small: the local model, no key, no server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.local_model

#: Runs the demo, then reports at exit whether the model's libraries were ever imported.
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('MODEL_LOADED', 'sentence_transformers' in sys.modules))\n"
    "import runpy\n"
    "runpy.run_module('clipembed.demo', run_name='__main__')\n"
)


def test_demo_embeds_everything_and_a_second_run_does_not_load_the_model(
    database_factory, tmp_path
):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_", "REDIS_"))
    }
    env.update(
        DATABASE_URL=database_factory.new(dimensions=384),
        CLIPEMBED_HOME=str(tmp_path / "home"),
        CLIPEMBED_DEMO_CLIPS="120",
    )

    def demo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )

    first = demo()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "loaded 120 generated clips" in first.stdout
    assert "Processed:        120" in first.stdout and "Failed:           0" in first.stdout
    assert "Coverage:               100.00%" in first.stdout
    assert "Redis cache on" in first.stdout or "running uncached" in first.stdout

    second = demo()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "120 clips already loaded" in second.stdout
    assert "Processed:        0" in second.stdout and "Skipped:          120" in second.stdout
    assert "MODEL_LOADED False" in second.stdout  # nothing to embed: the model never loads
    assert "Coverage:               100.00%" in second.stdout


def test_demo_rejects_a_bad_clip_count(tmp_path):
    env = dict(os.environ, CLIPEMBED_HOME=str(tmp_path), CLIPEMBED_DEMO_CLIPS="lots")
    out = subprocess.run(
        [sys.executable, "-m", "clipembed.demo"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "CLIPEMBED_DEMO_CLIPS" in out.stderr
