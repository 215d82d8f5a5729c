"""Acceptance tests run the real ``clipembed`` command in subprocesses, as a user would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.plugins.provider import subprocess_env

CLIPEMBED = [sys.executable, "-m", "clipembed"]


@pytest.fixture
def cli_env(
    database_factory, fake_openai, redis_base_url, redis_prefix, tmp_path
) -> dict[str, str]:
    return subprocess_env(
        database_url=database_factory.new(dimensions=768),
        base_url=fake_openai.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "home",
        EMBEDDING_TOKENS_PER_MINUTE="100000000",
        CLIPEMBED_LOG_LEVEL="INFO",
    )


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
