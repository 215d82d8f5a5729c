"""The command line as a user meets it: exit codes, one-line errors, embed, migrate."""

from __future__ import annotations

import json

from tests.plugins.provider import TEST_KEY


def test_embed_prints_vectors_and_second_run_sends_nothing(clipembed, fake_openai):
    first = clipembed("embed", "Insane clutch!", "神プレイすぎる", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert [d["dimensions"] for d in doc] == [768, 768]
    assert [d["cached"] for d in doc] == [False, False]
    assert len(doc[0]["embedding"]) == 768
    requests = fake_openai.stats()["requests"]
    second = clipembed("embed", "Insane clutch!", "神プレイすぎる")
    assert second.returncode == 0
    assert "from cache" in second.stdout
    assert fake_openai.stats()["requests"] == requests
    for out in (first, second):
        assert TEST_KEY not in out.stdout + out.stderr


def test_embed_stdin(clipembed, cli_env):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "clipembed", "embed", "--stdin", "--json"],
        input="one\ntwo\n\nthree\n",
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [d["text"] for d in json.loads(out.stdout)] == ["one", "two", "three"]


def test_configuration_errors_exit_2_with_one_line(clipembed, cli_env):
    cases = [
        ({"OPENAI_API_KEY": ""}, "OPENAI_API_KEY is required"),
        ({"EMBEDDING_DIMENSIONS": "4000"}, "more than text-embedding-3-small"),
        ({"EMBEDDING_BATCH_SIZE": "5000"}, "EMBEDDING_BATCH_SIZE"),
        (
            {"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"},
            "cannot connect to the database",
        ),
    ]
    for overrides, fragment in cases:
        env = dict(cli_env, **overrides)
        if overrides.get("OPENAI_API_KEY") == "":
            env.pop("OPENAI_API_KEY")
        out = clipembed("backfill", env=env)
        assert out.returncode == 2, (overrides, out.stdout, out.stderr)
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], out.stderr
        assert "Traceback" not in out.stderr
        assert "hunter2" not in out.stderr


def test_provider_failure_exits_1(clipembed, fake_openai):
    fake_openai.control(api_key="sk-another-key-0000000000")
    out = clipembed("embed", "x")
    assert out.returncode == 1
    assert "401" in out.stdout + out.stderr
    assert TEST_KEY not in out.stdout + out.stderr


def test_migrate_status_down_up(clipembed):
    status = clipembed("migrate", "status")
    assert status.returncode == 0 and "0002_embeddings: applied" in status.stdout
    down = clipembed("migrate", "down", "--to", "1")
    assert down.returncode == 0 and "rolled back 0002_embeddings" in down.stdout
    assert "pending" in clipembed("migrate", "status").stdout
    # a job refuses to run against an unmigrated schema, with exit 2
    refused = clipembed("backfill")
    assert refused.returncode == 2 and "migrate up" in refused.stderr
    up = clipembed("migrate", "up")
    assert up.returncode == 0 and "applied 0002_embeddings" in up.stdout
