"""SEARCH_DATABASE_URL: search reads a real streaming replica while jobs write to the primary.

The primary and its hot standby come from ``tests.plugins.replica`` (pg_basebackup -R of a
fresh primary, both on pgserver's binaries). Replay is paused on the standby to prove where a
search read: a clip embedded on the primary is invisible through ``Runtime.reader`` until the
standby replays it, then found by keywords and by its vector.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from clipembed import clips, runtime
from clipembed.bulk import backfill
from clipembed.db import migrations
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.status import stats as stats_mod
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.provider import subprocess_env
from tests.plugins.queue import clipembed_cli
from tests.plugins.replica import ReplicaPair, replica_pair  # noqa: F401 - the fixture
from tests.plugins.waiting import wait_for, wait_until

DIMS = 768
NEW_TITLE = "volcano skydive marathon"


def scalar(url: str, query: str, args: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, args).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def replay_paused(pair: ReplicaPair) -> Iterator[None]:
    """WAL keeps streaming to the standby but is not applied until the block ends."""
    scalar(pair.replica_url, "SELECT pg_wal_replay_pause()")
    try:
        wait_until(
            lambda: scalar(pair.replica_url, "SELECT pg_get_wal_replay_pause_state()") == "paused",
            timeout=30,
            what="replay to pause",
        )
        yield
    finally:
        scalar(pair.replica_url, "SELECT pg_wal_replay_resume()")


def received_everything(pair: ReplicaPair) -> bool:
    """The standby has received (not necessarily replayed) all WAL the primary wrote."""
    target = scalar(pair.primary_url, "SELECT pg_current_wal_insert_lsn()::text")
    return bool(
        scalar(pair.replica_url, "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (target,))
    )


@pytest.fixture
async def replicated(replica_pair, tmp_path, openai_settings):  # noqa: F811
    """A migrated database with 3 embedded clips on the primary, replayed on the standby."""
    primary, replica = replica_pair.new_database()
    async with await psycopg.AsyncConnection.connect(primary, autocommit=True) as conn:
        await migrations.up(conn, dimensions=DIMS)
    await load_clips(primary, [clip_record(i) for i in range(3)], tmp_path)
    async with runtime.open_runtime(openai_settings(database_url=primary)) as rt:
        assert (await backfill.run(rt)).processed == 3
    await wait_for(replica_pair.caught_up, timeout=30, what="the standby to catch up")
    return primary, replica


async def in_recovery(pool: Any) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pg_is_in_recovery()")
        row = await cur.fetchone()
        await conn.commit()
    return bool(row and row[0])


async def titles(rt: runtime.Runtime, pool: Any, query: str, mode: str) -> list[str]:
    params = core.Params(mode=mode)  # type: ignore[arg-type]
    results = await clip_search.search(
        pool, rt.service, query, params=params, filters=clip_search.Filters()
    )
    return [r["title"] for r in results]


async def test_search_reads_the_replica_and_sees_a_clip_once_replayed(
    replica_pair,  # noqa: F811
    replicated,
    openai_settings,
    tmp_path,
):
    primary, replica = replicated
    cfg = openai_settings(database_url=primary, search_database_url=replica)
    async with runtime.open_runtime(cfg, search=True) as rt:
        assert rt.search_pool is not None and rt.reader is rt.search_pool
        assert await in_recovery(rt.reader)  # search reads the standby ...
        assert not await in_recovery(rt.pool)  # ... jobs write to the primary
        async with rt.reader.connection() as conn:
            cur = await conn.execute("SHOW statement_timeout")
            assert (await cur.fetchone()) == ("2s",)  # SEARCH_STATEMENT_TIMEOUT_MS kept
        assert "clutch play number 1" in await titles(
            rt, rt.reader, "clutch play number 1", "hybrid"
        )

        record = clip_record(100, title=NEW_TITLE)
        text = clips.embedding_text(
            clips.ClipText(
                NEW_TITLE, record["broadcaster_name"], record["creator_name"], record["game_name"]
            )
        )
        with replay_paused(replica_pair):
            await load_clips(primary, [record], tmp_path)
            assert (await backfill.run(rt)).processed == 1  # written through rt.pool
            await wait_for(
                lambda: received_everything(replica_pair), timeout=30, what="WAL to stream"
            )
            # on the primary at once; not on the standby, whose replay is paused
            assert (await titles(rt, rt.pool, NEW_TITLE, "keyword"))[0] == NEW_TITLE
            assert NEW_TITLE not in await titles(rt, rt.reader, NEW_TITLE, "keyword")
            lag = await stats_mod.replica_lag(replica)
            assert lag is not None and lag > 0

        async def found(mode: str, query: str) -> bool:
            hits = await titles(rt, rt.reader, query, mode)
            return bool(hits) and hits[0] == NEW_TITLE

        await wait_for(lambda: found("keyword", NEW_TITLE), timeout=30, what="keyword hit")
        # its own text embeds to its own vector (the fake provider is deterministic): top hit
        await wait_for(lambda: found("semantic", text), timeout=30, what="semantic hit")
        assert await found("hybrid", NEW_TITLE)
        await wait_for(replica_pair.caught_up, timeout=30, what="the standby")
        assert await stats_mod.replica_lag(replica) == 0.0
        assert await in_recovery(rt.reader)


async def test_similar_clips_and_no_write_on_the_standby(replicated, openai_settings):
    primary, replica = replicated
    cfg = openai_settings(database_url=primary, search_database_url=replica)
    async with runtime.open_runtime(cfg, search=True) as rt:
        clip_id = scalar(replica, "SELECT id FROM clips ORDER BY id LIMIT 1")
        params = core.Params(mode="semantic")
        similar = await clip_search.similar(
            rt.reader, clip_id, params=params, filters=clip_search.Filters()
        )
        assert similar is not None and len(similar) == 2
        async with rt.reader.connection() as conn:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await conn.execute("UPDATE clips SET title = 'x'")


def test_stats_shows_the_replica_lag(
    replica_pair,  # noqa: F811
    replicated,
    fake_openai,
    redis_base_url,
    redis_prefix,
    tmp_path,
):
    primary, replica = replicated
    env = subprocess_env(
        database_url=primary,
        base_url=fake_openai.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "home",
        CLIPEMBED_LOG_LEVEL="WARNING",
    )
    plain = clipembed_cli(env, "stats", "--json")
    assert plain.returncode == 0, plain.stderr
    assert "replica_lag_seconds" not in json.loads(plain.stdout)

    env["SEARCH_DATABASE_URL"] = replica
    with replay_paused(replica_pair):
        with psycopg.connect(primary) as conn:
            conn.execute("UPDATE clips SET view_count = view_count + 1")
        wait_until(lambda: received_everything(replica_pair), timeout=30, what="WAL to stream")
        behind = clipembed_cli(env, "stats", "--json")
    assert behind.returncode == 0, behind.stderr
    data = json.loads(behind.stdout)
    assert data["replica_lag_seconds"] > 0 and data["total_clips"] == 3

    wait_until(replica_pair.caught_up, timeout=30, what="the standby to catch up")
    current = clipembed_cli(env, "stats")
    assert current.returncode == 0, current.stderr
    assert "Search replica lag:     0.0s" in current.stdout
