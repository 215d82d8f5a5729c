"""The backfill on the 3,504 real clips through the real command (issue 3's acceptance list)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import clips
from clipembed.testing.fakeopenai import expected_vector
from tests.acceptance.conftest import CLIPEMBED, real_clips

REAL_CLIPS = 3504


def load(clipembed) -> None:
    out = clipembed("import", str(real_clips()))
    assert out.returncode == 0, out.stderr
    assert f"loaded {REAL_CLIPS} clips" in out.stdout


def stored(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        return conn.execute(
            "SELECT title, broadcaster_name, creator_name, game_name, embedding, embedding_model "
            "FROM clips WHERE NOT is_removed"
        ).fetchall()


def assert_every_vector_is_right(database_url: str) -> None:
    rows = stored(database_url)
    assert len(rows) == REAL_CLIPS
    for title, broadcaster, creator, game, embedding, model in rows:
        assert embedding is not None, title
        text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
        np.testing.assert_allclose(
            embedding.to_numpy(), expected_vector(text, 768), rtol=1e-5, atol=1e-6
        )
        assert model == "text-embedding-3-small"


def summary(out: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_all_real_clips_then_nothing_then_force_from_cache(clipembed, cli_env, fake_openai):
    load(clipembed)
    first = clipembed("backfill", "--batch", "100", "--json")
    assert first.returncode == 0, first.stderr
    s = summary(first)
    assert s["total"] == REAL_CLIPS and s["processed"] == REAL_CLIPS and s["failed"] == 0
    server = fake_openai.stats()
    assert s["requests"] == server["requests"] and s["tokens"] == server["tokens"]
    assert server["embedded_more_than_once"] == 0
    assert_every_vector_is_right(cli_env["DATABASE_URL"])
    titles = " ".join(r[0] for r in stored(cli_env["DATABASE_URL"]))
    assert any("\u3040" <= ch <= "\u30ff" for ch in titles)  # Japanese kana
    assert any("\uac00" <= ch <= "\ud7a3" for ch in titles)  # Korean hangul

    again = summary(clipembed("backfill", "--json"))
    assert again["processed"] == 0 and again["skipped"] == REAL_CLIPS and again["requests"] == 0
    assert fake_openai.stats()["requests"] == server["requests"]

    forced = clipembed("backfill", "--force", "--json")
    f = summary(forced)
    assert f["processed"] == REAL_CLIPS and f["requests"] == 0 and f["cache_hit_rate"] == 1.0
    assert fake_openai.stats()["requests"] == server["requests"]

    stats = json.loads(clipembed("stats", "--json").stdout)
    assert stats["total_clips"] == REAL_CLIPS and stats["coverage_percentage"] == 100.0
    assert stats["stale_embeddings"] == 0 and stats["by_model"] == {
        "text-embedding-3-small": REAL_CLIPS
    }


def test_dry_run_sends_and_writes_nothing(clipembed, cli_env, fake_openai):
    load(clipembed)
    out = clipembed("backfill", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    s = summary(out)
    assert s["would_embed"] == REAL_CLIPS and s["tokens"] > 0 and s["estimated_cost_usd"] > 0
    assert s["estimated_seconds"] is not None
    assert fake_openai.stats()["requests"] == 0
    assert all(r[4] is None for r in stored(cli_env["DATABASE_URL"]))


def test_sigint_midway_then_rerun_completes_without_duplicates(cli_env, clipembed, fake_openai):
    load(clipembed)
    fake_openai.control(latency_ms=150)
    proc = subprocess.Popen(
        [*CLIPEMBED, "backfill", "--batch", "50", "--concurrency", "2", "--json"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while fake_openai.stats()["requests"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err  # interrupted: not everything embedded
    first = json.loads(out.strip().splitlines()[-1])
    assert first["interrupted"] and 0 < first["processed"] < REAL_CLIPS
    with psycopg.connect(cli_env["DATABASE_URL"]) as conn:  # rebuilt even after the interruption
        assert (
            conn.execute("SELECT to_regclass('embeddings_space_1_hnsw')").fetchone()[0] is not None
        )
    fake_openai.control(latency_ms=0)
    rest = summary(clipembed("backfill", "--json"))
    assert rest["processed"] + first["processed"] == REAL_CLIPS
    assert rest["skipped"] == first["processed"]
    assert_every_vector_is_right(cli_env["DATABASE_URL"])
    assert fake_openai.stats()["embedded_more_than_once"] == 0


def test_faults_every_clip_correct_or_failed_then_done_next_run(clipembed, cli_env, fake_openai):
    load(clipembed)
    fake_openai.control(
        fail_rate_500=0.05,
        wrong_dims_rate=0.03,
        nan_rate=0.02,
        plan=["429"] * 6,
        retry_after_ms=50,
        seed=7,
    )
    env = dict(cli_env, EMBEDDING_MAX_ATTEMPTS="2")  # fewer attempts: some clips do fail
    first = clipembed("backfill", "--batch", "20", "--json", env=env)
    s = summary(first)
    assert s["processed"] + s["failed"] == REAL_CLIPS
    assert first.returncode == (1 if s["failed"] else 0)
    # the summary's numbers are what the server saw
    server = fake_openai.stats()
    assert s["requests"] == server["requests"]
    assert s["rate_limited"] == server["by_status"].get("429", 0) >= 6
    # nothing wrong was stored: every stored vector is the right one
    for title, broadcaster, creator, game, embedding, _ in stored(cli_env["DATABASE_URL"]):
        if embedding is not None:
            text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
            np.testing.assert_allclose(
                embedding.to_numpy(), expected_vector(text, 768), rtol=1e-5, atol=1e-6
            )
    fake_openai.control(fail_rate_500=0.0, wrong_dims_rate=0.0, nan_rate=0.0, plan=[])
    second = summary(clipembed("backfill", "--json"))
    assert second["processed"] == s["failed"] and second["failed"] == 0
    assert_every_vector_is_right(cli_env["DATABASE_URL"])


def test_import_reports_bad_lines_and_loads_the_rest(clipembed, cli_env, tmp_path):
    good = {
        "twitch_clip_id": "a1",
        "twitch_clip_url": "u",
        "embed_url": "e",
        "title": "ok",
        "creator_name": "c",
        "broadcaster_name": "b",
        "created_at": "2024-01-01T00:00:00Z",
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "twitch_clip_id": "a2", "title": "x" * 300}),
        json.dumps({**good, "twitch_clip_id": "a3", "created_at": "yesterday"}),
        json.dumps([1, 2]),
        json.dumps({**good, "twitch_clip_id": "a4", "title": "'; DROP TABLE clips;-- \x00 ✓"}),
    ]
    path = tmp_path / "clips.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = clipembed("import", str(path))
    assert out.returncode == 1
    assert "loaded 2 clips, 4 bad lines" in out.stdout
    for n, fragment in [
        (2, "not valid JSON"),
        (3, "title"),
        (4, "created_at"),
        (5, "not a JSON object"),
    ]:
        assert any(
            line.startswith(f"line {n}:") and fragment in line for line in out.stderr.splitlines()
        ), out.stderr
    # upsert: importing again changes nothing and duplicates nothing
    assert clipembed("import", str(path)).returncode == 1
    with psycopg.connect(cli_env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM clips").fetchone()[0] == 2


@pytest.mark.parametrize("window_days", [7])
def test_scheduler_short_interval_embeds_new_recent_clips(
    clipembed, cli_env, fake_openai, window_days
):
    load(clipembed)  # real clips are from 2024: outside the 7-day window
    with psycopg.connect(cli_env["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE clips SET created_at = now() - interval '1 day' WHERE twitch_clip_id IN "
            "(SELECT twitch_clip_id FROM clips ORDER BY twitch_clip_id LIMIT 30)"
        )
    env = dict(cli_env, EMBEDDING_SCHEDULER_INTERVAL_MINUTES="0.02", EMBEDDING_SCHEDULER_LIMIT="20")
    proc = subprocess.Popen(
        [*CLIPEMBED, "scheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        done = 0
        while time.monotonic() < deadline:
            with psycopg.connect(cli_env["DATABASE_URL"]) as conn:
                done = conn.execute(
                    "SELECT count(*) FROM clips WHERE embedding IS NOT NULL"
                ).fetchone()[0]
            if done >= 30:
                break
            time.sleep(0.2)
        assert done >= 30  # two cycles of at most 20
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["cycles"] >= 2 and report["failed"] == 0


def test_scheduler_replicas_take_turns(cli_env, database_url):
    """Only one replica runs a cycle at a time (advisory lock)."""
    from clipembed import runtime, settings
    from clipembed.realtime import scheduler

    cfg = settings.Settings(
        _env_file=None,
        **{
            k.lower(): v
            for k, v in cli_env.items()
            if k.startswith(("EMBEDDING_", "OPENAI_", "REDIS_", "DATABASE_"))
        },
        redis_key_prefix=cli_env["CLIPEMBED_REDIS_PREFIX"],
    )

    async def main():
        async with runtime.open_runtime(cfg) as rt:
            async with rt.pool.connection() as conn:
                await conn.execute("SELECT pg_advisory_lock(%s)", (scheduler.LOCK_KEY,))
                skipped = await scheduler.run_cycle(rt)
                await conn.execute("SELECT pg_advisory_unlock(%s)", (scheduler.LOCK_KEY,))
                await conn.commit()
            ran = await scheduler.run_cycle(rt)
        return skipped, ran

    skipped, ran = asyncio.run(main())
    assert skipped.ran is False and ran.ran is True
