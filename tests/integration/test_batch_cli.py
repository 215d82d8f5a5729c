"""The Batch API backfill through the real CLI (in process), against the fake over HTTP.

``backfill --via batch --no-wait``, ``batches list|show|cancel [--json]``, a later run that
re-plans what a cancelled batch left unanswered, ``backfill --dry-run --via batch`` (both
prices, nothing sent), ``--via auto`` on either side of EMBEDDING_BATCH_API_MIN_CLIPS, and the
one-line refusal with a local model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from clipembed import clips
from clipembed.testing.fakeopenai import text_digest
from tests.integration.test_batch_backfill import DIMS, assert_correct, rows, sql
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.provider import subprocess_env
from tests.plugins.queue import clipembed_run

CLIPS = 60  # 9 request lines of 7 inputs (EMBEDDING_BATCH_SIZE and CLIPEMBED_BACKFILL_BATCH_SIZE 7)


@pytest.fixture
def new_db(database_factory, tmp_path) -> Callable[..., Any]:
    async def make(n: int = CLIPS, dimensions: int = DIMS) -> str:
        url = database_factory.new(dimensions=dimensions)
        await load_clips(url, [clip_record(i) for i in range(n)], tmp_path)
        sql(url, "DELETE FROM embedding_queue")  # the backlog is the backfill's
        return url

    return make


@pytest.fixture
async def db(new_db) -> str:
    return await new_db()


@pytest.fixture
def env_for(fake_openai, redis_base_url, redis_prefix, tmp_path) -> Callable[..., dict[str, str]]:
    def make(url: str, **extra: str) -> dict[str, str]:
        return subprocess_env(
            database_url=url,
            base_url=fake_openai.base_url,
            redis_url=redis_base_url,
            redis_prefix=redis_prefix,
            home=tmp_path / "home",
            CLIPEMBED_LOG_LEVEL="WARNING",
            EMBEDDING_BATCH_SIZE="7",  # 7 inputs per request line: several lines per file
            CLIPEMBED_BACKFILL_BATCH_SIZE="7",  # (a backfill raises the first to this one)
            EMBEDDING_BATCH_POLL_SECONDS="0.05",
            **extra,
        )

    return make


def cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    done = clipembed_run(env, *args)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


def cli_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(cli(env, *args, "--json").strip().splitlines()[-1])


def all_embedded_once(url: str, fake_openai, *, batches: int) -> None:
    live = rows(url)
    for row in live:
        assert_correct(row)
    stats = fake_openai.stats()
    assert stats["requests"] == 0  # not one synchronous embeddings request
    assert stats["batches_created"] == batches
    assert stats["input_files_batched_more_than_once"] == 0
    assert stats["batch_custom_ids_more_than_once"] == 0
    counts = stats["embedded_counts"]
    assert set(counts.values()) == {1}
    assert {text_digest(clips.embedding_text(clips.ClipText(*r[1:5]))) for r in live} == set(counts)


def test_no_wait_list_show_cancel_and_a_later_run_re_plans_the_rest(db, env_for, fake_openai):
    env = env_for(db)
    fake_openai.control(batch_mode="manual")  # the provider works on it until told
    summary = cli_json(env, "backfill", "--via", "batch", "--no-wait")
    assert summary["batches_submitted"] == 1 and summary["clips_submitted"] == CLIPS
    assert summary["open_batches"] == 1 and summary["applied"] == 0
    assert summary["interrupted"] is False

    listed = cli_json(env, "batches", "list")
    assert len(listed) == 1
    (b,) = listed
    assert b["state"] in ("submitted", "validating", "in_progress")
    assert b["provider_batch_id"] in fake_openai.state.batches
    assert b["clips"] == CLIPS and b["requests"] == 9 and b["tokens"] > 0
    assert b["cost_usd"] == pytest.approx(b["sync_cost_usd"] / 2)
    assert b["saving_usd"] == pytest.approx(b["sync_cost_usd"] / 2, abs=1e-6)
    assert b["applied"] == 0 and b["submitted_at"] and b["applied_at"] is None
    text = cli(env, "batches", "list")
    assert b["provider_batch_id"] in text and b["state"] in text

    shown = cli_json(env, "batches", "show", str(b["id"]))
    assert shown == b
    text = cli(env, "batches", "show", str(b["id"]))
    assert re.search(r"provider_batch_id: " + re.escape(b["provider_batch_id"]), text)
    missing = clipembed_run(env, "batches", "show", "999", "--json")
    assert missing.returncode == 2 and "no batch 999" in missing.stderr

    # 3 of the 9 lines finish, then the operator cancels: those 21 clips are kept
    fake_openai.control(batch_process={b["provider_batch_id"]: 3})
    out = cli(env, "batches", "cancel", str(b["id"]))
    assert out.strip() == f"batch {b['id']}: cancelling"
    assert cli_json(env, "batches", "show", str(b["id"]))["state"] == "cancelling"
    assert fake_openai.stats()["batches_created"] == 1

    fake_openai.control(batch_mode="instant")
    summary = cli_json(env, "backfill", "--via", "batch")
    assert summary["applied"] == CLIPS  # 21 from the cancelled batch, 39 from a new one
    assert summary["released"] == CLIPS - 21 and summary["batches_submitted"] == 1
    assert summary["open_batches"] == 0

    first, second = sorted(cli_json(env, "batches", "list"), key=lambda x: x["id"])
    assert first["state"] == "applied" and first["applied"] == 21
    assert first["request_counts"]["completed"] == 3
    assert second["state"] == "applied" and second["clips"] == CLIPS - 21
    assert second["applied"] == CLIPS - 21
    all_embedded_once(db, fake_openai, batches=2)
    assert (
        sql(
            db,
            "SELECT clip_id FROM embedding_batch_items WHERE state = 'applied' "
            "GROUP BY clip_id HAVING count(*) > 1",
        )
        == []
    )

    # cancelling a finished batch is a no-op with a clear answer
    assert cli(env, "batches", "cancel", str(first["id"])).strip() == (
        f"batch {first['id']}: already applied"
    )


def test_dry_run_via_batch_prints_both_prices_and_sends_nothing(db, env_for, fake_openai):
    # a price that makes four decimals meaningful for 60 short clips
    env = env_for(db, EMBEDDING_PRICE_PER_MILLION_TOKENS="10000")
    before = fake_openai.stats()
    text = cli(env, "backfill", "--dry-run", "--via", "batch")
    sync = re.search(r"Estimated cost:\s+\$([0-9.]+)", text)
    batch = re.search(r"Via Batch API:\s+\$([0-9.]+)", text)
    assert sync and batch, text
    assert float(sync[1]) > 0
    assert float(batch[1]) == pytest.approx(float(sync[1]) / 2, abs=1e-4)
    assert f"Would embed:      {CLIPS}" in text

    data = cli_json(env, "backfill", "--dry-run", "--via", "batch")
    assert data["dry_run"] is True and data["would_embed"] == CLIPS
    assert data["batch_cost_usd"] == pytest.approx(data["estimated_cost_usd"] / 2)
    assert data["estimated_cost_usd"] == pytest.approx(data["tokens"] * 10000 / 1e6)

    # --via sync prints no batch line
    assert "Via Batch API" not in cli(env, "backfill", "--dry-run", "--via", "sync")

    after = fake_openai.stats()
    assert after == before  # nothing sent: no embeddings, no files, no batches
    assert sql(db, "SELECT count(*) FROM embedding_batches") == [(0,)]
    assert sql(db, "SELECT count(*) FROM clips WHERE embedding IS NOT NULL") == [(0,)]


async def test_auto_uses_sync_up_to_the_minimum_and_the_batch_api_above(
    new_db, env_for, fake_openai
):
    at_minimum = await new_db()
    summary = cli_json(
        env_for(at_minimum, EMBEDDING_BATCH_API_MIN_CLIPS=str(CLIPS)), "backfill", "--via", "auto"
    )
    stats = fake_openai.stats()
    assert summary["processed"] == CLIPS and "batches_submitted" not in summary
    assert stats["requests"] > 0 and stats["batches_created"] == 0
    assert sql(at_minimum, "SELECT count(*) FROM embedding_batches") == [(0,)]
    for row in rows(at_minimum):
        assert_correct(row)

    above = await new_db()
    requests = stats["requests"]
    summary = cli_json(
        env_for(above, EMBEDDING_BATCH_API_MIN_CLIPS=str(CLIPS - 1)), "backfill", "--via", "auto"
    )
    stats = fake_openai.stats()
    assert summary["batches_submitted"] == 1 and summary["applied"] == CLIPS
    assert stats["requests"] == requests  # no synchronous request this time
    assert stats["batches_created"] == 1
    assert sql(above, "SELECT state, clips FROM embedding_batches") == [("applied", CLIPS)]
    for row in rows(above):
        assert_correct(row)


async def test_batch_with_a_local_model_exits_2_with_one_line(new_db, env_for, fake_openai):
    url = await new_db(n=3, dimensions=384)  # the bundled all-MiniLM-L6-v2's size
    env = env_for(url, EMBEDDING_PROVIDER="local")
    done = clipembed_run(env, "backfill", "--via", "batch")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and "EMBEDDING_PROVIDER=openai" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert sql(url, "SELECT count(*) FROM embedding_batches") == [(0,)]
    assert sql(url, "SELECT count(*) FROM clips WHERE embedding IS NOT NULL") == [(0,)]
    assert fake_openai.stats()["api_calls"] == {}

    bad = clipembed_run(env, "backfill", "--via", "bogus")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --via must be sync, batch or auto"


def test_a_later_auto_run_resumes_an_open_batch_instead_of_embedding_its_clips_again(
    db, env_for, fake_openai
):
    env = env_for(db, EMBEDDING_BATCH_API_MIN_CLIPS="1000")
    fake_openai.control(batch_mode="manual")
    assert cli_json(env, "backfill", "--via", "batch", "--no-wait")["open_batches"] == 1
    fake_openai.control(batch_mode="instant")
    # "--no-wait: submit and exit (a later run resumes)": the later run is the usual command
    cli_json(env, "backfill", "--via", "auto")
    cli_json(env, "backfill", "--via", "batch")  # whatever is still open is applied
    stats = fake_openai.stats()
    assert stats["requests"] == 0, f"{stats['requests']} synchronous requests"
    assert stats["embedded_more_than_once"] == 0
    all_embedded_once(db, fake_openai, batches=1)
