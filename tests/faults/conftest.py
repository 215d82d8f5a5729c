"""Fault tests: real `clipembed worker` processes against real PostgreSQL, Redis and HTTP.

Each test injects faults while clips are inserted and edited, waits until every clip has the
embedding of its current text, and reports: faults injected, clips embedded, lost, duplicated.
"Duplicated" counts clips whose embedding was written more than once for the same text (an
audit trigger records every write), so "embedded exactly once" is checked in the database.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import clips
from clipembed.db import migrations
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.provider import subprocess_env

AUDIT = """
CREATE TABLE embedding_audit (clip_id uuid, content_hash bytea, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION audit_embedding() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.embedding IS NOT NULL AND NEW.embedding_content_hash IS DISTINCT FROM OLD.embedding_content_hash
     OR (NEW.embedding_generated_at IS DISTINCT FROM OLD.embedding_generated_at) THEN
    INSERT INTO embedding_audit (clip_id, content_hash) VALUES (NEW.id, NEW.embedding_content_hash);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER audit_embedding AFTER UPDATE OF embedding ON clips FOR EACH ROW EXECUTE FUNCTION audit_embedding();
"""


def install_audit(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(AUDIT)


def check(url: str, *, faults: str) -> dict[str, int]:
    """Every live clip must hold the vector of its current text; returns the report."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT id, title, broadcaster_name, creator_name, game_name, embedding FROM clips WHERE NOT is_removed"
        ).fetchall()
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT clip_id, content_hash FROM embedding_audit "
            "GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
    lost = wrong = 0
    for _, title, broadcaster, creator, game, emb in rows:
        if emb is None:
            lost += 1
            continue
        text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
        if not np.allclose(emb.to_numpy(), expected_vector(text, 768), rtol=1e-5, atol=1e-6):
            wrong += 1
    report = {
        "clips": len(rows),
        "embedded": len(rows) - lost,
        "lost": lost,
        "wrong": wrong,
        "duplicated": dup,
    }
    print(f"\nFAULT REPORT [{faults}]: {report}")
    return report


def wait_until_embedded(url: str, *, stall: float) -> float:
    """Until every live clip is embedded and the queue is empty; returns the seconds it took.

    No deadline on the whole (a busy machine only makes the work slower): it fails when the
    backlog has not shrunk for ``stall`` seconds, i.e. when the work has stopped.
    """
    t0 = last_progress = time.monotonic()
    smallest: int | None = None
    while True:
        with psycopg.connect(url) as conn:
            left = conn.execute(
                "SELECT count(*) FROM clips WHERE NOT is_removed AND embedding IS NULL"
            ).fetchone()[0]
            queued = conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0]
        now = time.monotonic()
        if left == 0 and queued == 0:
            return now - t0
        if smallest is None or left + queued < smallest:
            smallest, last_progress = left + queued, now
        elif now - last_progress > stall:
            raise AssertionError(
                f"no progress for {stall:.0f} s: {left} unembedded, {queued} queued"
            )
        time.sleep(0.2)


@pytest.fixture
def worker_env(
    fake_openai, redis_base_url, redis_prefix, tmp_path
) -> Callable[..., dict[str, str]]:
    def make(database_url: str, **overrides: str) -> dict[str, str]:
        settings = {
            "EMBEDDING_TOKENS_PER_MINUTE": "100000000",
            "CLIPEMBED_QUEUE_LEASE_SECONDS": "3",
            "CLIPEMBED_QUEUE_POLL_SECONDS": "0.5",
            "CLIPEMBED_WORKER_BATCH_SIZE": "20",
            "CLIPEMBED_WORKER_CONCURRENCY": "1",
            "CLIPEMBED_LOG_LEVEL": "WARNING",
        }
        return subprocess_env(
            database_url=database_url,
            base_url=fake_openai.base_url,
            redis_url=redis_base_url,
            redis_prefix=redis_prefix,
            home=tmp_path / "home",
            **(settings | overrides),
        )

    return make


@pytest.fixture
def spawn_worker() -> Iterator[Callable[[dict[str, str]], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-m", "clipembed", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def stop_worker(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


def edit_some(url: str, n: int, tag: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE clips SET title = title || %s WHERE id IN (SELECT id FROM clips ORDER BY random() LIMIT %s)",
            (f" [{tag}]", n),
        )


def start_private_postgres(pgdata: Path) -> Any:
    """A PostgreSQL of our own (pgserver), migrated, that a test may restart with :func:`pg_ctl`."""
    from clipembed import pgembed

    server = pgembed.get_server(pgdata, cleanup_mode="delete")
    url = server.get_uri("postgres")

    async def migrate() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        async with conn:
            await migrations.up(conn, dimensions=768)

    asyncio.run(migrate())
    return server


def pg_ctl(server: Any, *args: str) -> None:
    from clipembed import pgembed

    pgembed.pg_ctl(server, *args)
