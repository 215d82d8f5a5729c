"""Fixtures for the real-time queue: a runtime on a fresh database, and clip helpers."""

from __future__ import annotations

import concurrent.futures
import logging
import os
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


def clipembed_run(
    env: dict, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``clipembed ARGS`` in this process (typer's ``CliRunner``), answered like :func:`clipembed_cli`.

    For tests of what a command does and prints, without an interpreter start and its imports
    per call; signal handling, a real process's exit and killing it stay with
    :func:`clipembed_cli`. ``env`` stands for the whole environment, as a subprocess's would
    (variables it lacks are unset for the run). The command runs on a thread of its own, so it
    gets its own event loop even when called from an async test; the logging it configures is
    put back afterwards. An exception the command does not handle is raised here.
    """
    from typer.testing import CliRunner

    from clipembed.cli import app

    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }

    def invoke() -> Any:
        return CliRunner().invoke(
            app, list(args), input=input, env=overrides, catch_exceptions=False
        )

    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clipembed-cli") as pool:
            result = pool.submit(invoke).result()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
    return subprocess.CompletedProcess(
        ["clipembed", *args], result.exit_code, result.stdout, result.stderr
    )
