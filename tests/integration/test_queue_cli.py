"""``clipembed worker --once/--drain`` and ``clipembed failed list|retry`` as a user runs them."""

from __future__ import annotations

import json

import psycopg

from tests.plugins.queue import clipembed_run, insert_clips


def dead_letter(
    url: str, clip_id, error: str = "PermanentProviderError: 400 invalid input"
) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            """WITH gone AS (DELETE FROM embedding_queue WHERE clip_id = %s RETURNING clip_id, enqueued_at)
               INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at)
               SELECT clip_id, 5, %s, enqueued_at FROM gone""",
            (clip_id, error),
        )


def embedded(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM clips WHERE embedding IS NOT NULL").fetchone()[0]


def test_failed_list_and_retry_replay_dead_letters(queue_cli_env, database_url):
    ids = insert_clips(database_url, 4)
    for cid in ids[:3]:
        dead_letter(database_url, cid)

    r = clipembed_run(queue_cli_env, "failed", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["clip_id"] for row in rows} == {str(i) for i in ids[:3]}
    assert all("400 invalid input" in row["last_error"] for row in rows)
    human = clipembed_run(queue_cli_env, "failed", "list")
    assert str(ids[0]) in human.stdout and "attempts=5" in human.stdout

    r = clipembed_run(queue_cli_env, "worker", "--once")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["embedded"] == 1  # only the live item; dead letters wait
    assert embedded(database_url) == 1

    r = clipembed_run(queue_cli_env, "failed", "retry", str(ids[0]))
    assert r.returncode == 0 and "replayed 1" in r.stdout, r.stderr
    r = clipembed_run(queue_cli_env, "failed", "retry", "--all")
    assert r.returncode == 0 and "replayed 2" in r.stdout, r.stderr
    assert "no failed clips" in clipembed_run(queue_cli_env, "failed", "list").stdout

    r = clipembed_run(queue_cli_env, "worker", "--drain")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["embedded"] == 3
    assert embedded(database_url) == 4

    stats = clipembed_run(queue_cli_env, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    q = json.loads(stats.stdout)["queue"]
    assert q["pending"] == 0 and q["dead_letters"] == 0


def test_failed_retry_usage_errors_exit_2(queue_cli_env):
    r = clipembed_run(queue_cli_env, "failed", "retry")
    assert r.returncode == 2 and "--all" in r.stderr
    r = clipembed_run(queue_cli_env, "failed", "retry", "not-a-uuid")
    assert r.returncode == 2 and "UUID" in r.stderr
    assert "Traceback" not in r.stderr
