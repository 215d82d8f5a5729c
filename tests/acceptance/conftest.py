"""Acceptance tests run the real ``clipembed`` command in subprocesses, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.plugins.provider import TEST_KEY

CLIPEMBED = [sys.executable, "-m", "clipembed"]


@pytest.fixture
def cli_env(
    database_factory, fake_openai, redis_base_url, redis_prefix, tmp_path
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_"))
    }
    env.update(
        DATABASE_URL=database_factory.new(dimensions=768),
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY=TEST_KEY,
        EMBEDDING_API_BASE_URL=fake_openai.base_url,
        REDIS_URL=redis_base_url,
        CLIPEMBED_REDIS_PREFIX=redis_prefix,
        EMBEDDING_REQUESTS_PER_MINUTE="100000",
        EMBEDDING_TOKENS_PER_MINUTE="100000000",
        EMBEDDING_TIMEOUT_SECONDS="5",
        CLIPEMBED_HOME=str(tmp_path / "home"),
        CLIPEMBED_LOG_LEVEL="INFO",
    )
    return env


@pytest.fixture
def clipembed(cli_env) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 120, **kw
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLIPEMBED, *args],
            env=env or cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )

    return run


def real_clips() -> Path:
    from tests.conftest import shared_data

    return shared_data("twitch/clips.jsonl.gz")
