"""Fixtures for providers: the fake OpenAI server (real HTTP) and the local model (loaded once)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clipembed import settings
from clipembed.testing.fakeopenai import FakeOpenAI

TEST_KEY = "sk-test-0123456789abcdefSECRET"


def subprocess_env(
    *, database_url: str, base_url: str, redis_url: str, redis_prefix: str, home: Path, **extra: str
) -> dict[str, str]:
    """Environment for a real ``clipembed`` subprocess against the fake provider.

    The caller's own EMBEDDING_/OPENAI_/CLIPEMBED_ variables are dropped so a developer's
    shell never leaks into a test; ``extra`` adds or overrides variables.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_"))
    }
    env.update(
        DATABASE_URL=database_url,
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY=TEST_KEY,
        EMBEDDING_API_BASE_URL=base_url,
        REDIS_URL=redis_url,
        CLIPEMBED_REDIS_PREFIX=redis_prefix,
        EMBEDDING_REQUESTS_PER_MINUTE="100000",
        EMBEDDING_TIMEOUT_SECONDS="5",
        CLIPEMBED_HOME=str(home),
        # bulk work at normal priority: the suite runs two test processes on two cores, and a
        # niced backfill waits behind the other's tests (the priority has tests of its own:
        # tests/integration/test_backfill.py)
        CLIPEMBED_BULK_NICE="0",
    )
    env.update(extra)
    return env


@pytest.fixture
def fake_openai_factory() -> Iterator[Callable[..., FakeOpenAI]]:
    """``make(**options)`` starts another in-process fake server (``fakeopenai.Options``).

    Every server started is stopped at the end of the test.
    """
    started: list[FakeOpenAI] = []

    def make(**options: Any) -> FakeOpenAI:
        server = FakeOpenAI(**options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def fake_openai_session() -> Iterator[FakeOpenAI]:
    """One fake OpenAI server for the whole session (``fake_openai`` renews it per test)."""
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def fake_openai(fake_openai_session: FakeOpenAI) -> FakeOpenAI:
    """The fake OpenAI server as new for this test: any Bearer key, no limits, no faults, no
    statistics, files or batches (the session's server, renewed: starting one per test cost
    more than most tests that use it)."""
    return fake_openai_session.renew()


@pytest.fixture
def openai_settings(
    fake_openai, redis_base_url, redis_prefix, tmp_path
) -> Callable[..., settings.Settings]:
    """Settings for the openai provider pointed at the fake server, with this test's Redis prefix."""

    def make(**overrides: Any) -> settings.Settings:
        values: dict[str, Any] = {
            "embedding_provider": "openai",
            "openai_api_key": TEST_KEY,
            "embedding_api_base_url": fake_openai.base_url,
            "redis_url": redis_base_url,
            "redis_key_prefix": redis_prefix,
            "embedding_requests_per_minute": 100_000,
            "embedding_tokens_per_minute": 100_000_000,
            "embedding_timeout_seconds": 5,
            "clipembed_home": tmp_path / "home",
            "clipembed_bulk_nice": 0,  # as in subprocess_env
        }
        values.update(overrides)
        return settings.Settings(_env_file=None, **values)

    return make


@pytest.fixture(scope="session")
def local_settings(tmp_path_factory) -> settings.Settings:
    return settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        clipembed_home=tmp_path_factory.mktemp("home"),
    )


@pytest.fixture(scope="session")
def local_provider(local_settings):
    """The bundled all-MiniLM-L6-v2, loaded once per test session."""
    from clipembed.embedding import providers

    return providers.create(local_settings)
