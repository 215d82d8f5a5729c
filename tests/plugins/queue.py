"""Fixtures for the real-time queue: a runtime on a fresh database, and clip helpers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from clipembed import runtime
from tests.plugins.provider import subprocess_env


def insert_clips(
    url: str, n: int, *, prefix: str = "clip", game: str | None = "Valorant", **extra: Any
) -> list[Any]:
    rows = []
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for i in range(n):
            tid = f"{prefix}-{i}-{uuid.uuid4().hex[:8]}"
            cur.execute(
                """INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
                   broadcaster_name, game_name, created_at)
                   VALUES (%s, 'u', 'e', %s, %s, %s, %s, now()) RETURNING id""",
                (tid, f"{prefix} title {i}", f"creator{i % 7}", f"streamer{i % 5}", game),
            )
            rows.append(cur.fetchone()[0])
    return rows


@pytest.fixture
async def queue_runtime(openai_settings, database_url):
    cfg = openai_settings(
        database_url=database_url, clipembed_queue_lease_seconds=5, clipembed_queue_poll_seconds=0.2
    )
    async with runtime.open_runtime(cfg) as rt:
        yield rt


@pytest.fixture
def queue_cli_env(database_url, fake_openai, redis_base_url, redis_prefix, tmp_path) -> dict:
    """Environment for running the real ``clipembed`` command against this test's database."""
    return subprocess_env(
        database_url=database_url,
        base_url=fake_openai.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "home",
        CLIPEMBED_LOG_LEVEL="WARNING",
    )


def clipembed_cli(env: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipembed", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
