"""``clipembed backfill --via batch`` killed with SIGKILL at each of its five points, then rerun.

The issue's requirement: kill -9 before upload, after upload, after batch creation, during
download and during apply, and restart: each clip embedded exactly once, no batch submitted
twice, never a lost finished result.

Each case runs the real command in a subprocess against a real PostgreSQL and the fake OpenAI
server over HTTP. The crash point is made deterministic without sleeps: the fake is wrapped in
an ASGI gate that holds one endpoint's request (before it runs, or after it ran with its answer
held back), so the process is provably inside that step when the test sees the request arrive
and the database in the matching state; "during apply" holds a row lock on one clip from the
test's own connection so the apply's UPDATE blocks, seen in pg_stat_activity. After the kill
the gate (or the lock) is released and the backfill is run again to completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from clipembed import clips
from clipembed.testing.fakeopenai import FakeOpenAI, text_digest
from tests.integration.test_batch_backfill import DIMS, assert_correct, rows, sql
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.provider import subprocess_env
from tests.plugins.queue import clipembed_cli
from tests.plugins.waiting import wait_until

CLIPS = 60

#: Every write of a clip's embedding, to prove that none was stored twice for the same text.
AUDIT = """
CREATE TABLE batch_crash_audit (clip_id uuid, content_hash bytea);
CREATE FUNCTION batch_crash_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.embedding IS NOT NULL THEN
    INSERT INTO batch_crash_audit VALUES (NEW.id, NEW.embedding_content_hash);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER batch_crash_audit AFTER UPDATE OF embedding ON clips
    FOR EACH ROW EXECUTE FUNCTION batch_crash_audit();
"""


# --------------------------------------------------------------------------- the gated fake
@dataclasses.dataclass
class Hold:
    """Requests matching ``method`` and ``path`` wait until released (``after``: once answered)."""

    method: str
    path: re.Pattern[str]
    after: bool = False
    arrived: threading.Event = dataclasses.field(default_factory=threading.Event)
    released: threading.Event = dataclasses.field(default_factory=threading.Event)


class Gate:
    """An ASGI wrapper around the fake's app that can hold one endpoint's requests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state  # FakeOpenAI.state reads app.state.fake
        self.holds: list[Hold] = []

    def hold(self, method: str, path: str, *, after: bool = False) -> Hold:
        h = Hold(method, re.compile(path), after)
        self.holds.append(h)
        return h

    def release_all(self) -> None:
        for h in self.holds:
            h.released.set()
        self.holds.clear()

    async def _wait(self, h: Hold) -> None:
        while not h.released.is_set() and not self.state.fake.stopping:
            await asyncio.sleep(0.01)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        h = None
        if scope["type"] == "http":
            h = next(
                (
                    x
                    for x in self.holds
                    if x.method == scope["method"] and x.path.fullmatch(scope["path"])
                ),
                None,
            )
        if h is None:
            await self.app(scope, receive, send)
        elif not h.after:
            h.arrived.set()
            await self._wait(h)
            await self.app(scope, receive, send)
        else:  # run it, then hold the answer back: done at the provider, unknown to the client
            messages: list[Any] = []

            async def keep(message: Any) -> None:
                messages.append(message)

            await self.app(scope, receive, keep)
            h.arrived.set()
            await self._wait(h)
            with contextlib.suppress(Exception):  # the client is gone
                for m in messages:
                    await send(m)


class GatedFake(FakeOpenAI):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = Gate(self.app)
        self.app = self.gate


@pytest.fixture
def fake() -> Iterator[GatedFake]:
    server = GatedFake()
    server.start()
    try:
        yield server
    finally:
        server.gate.release_all()
        server.stop()


# --------------------------------------------------------------------------- helpers
@pytest.fixture
async def db(database_factory, tmp_path):
    url = database_factory.new(dimensions=DIMS)
    await load_clips(url, [clip_record(i) for i in range(CLIPS)], tmp_path)
    # the import queued every clip and no worker runs: the batch takes them (issue 19)
    with psycopg.connect(url) as conn:
        conn.execute(AUDIT)
    return url


@pytest.fixture
def env_for(fake, redis_base_url, redis_prefix, tmp_path) -> Callable[..., dict[str, str]]:
    def make(url: str, **extra: str) -> dict[str, str]:
        return subprocess_env(
            database_url=url,
            base_url=fake.base_url,
            redis_url=redis_base_url,
            redis_prefix=redis_prefix,
            home=tmp_path / "home",
            CLIPEMBED_LOG_LEVEL="WARNING",
            EMBEDDING_TIMEOUT_SECONDS="60",  # a held request must not be retried by the SDK
            EMBEDDING_BATCH_SIZE="7",  # 7 inputs per request line: several lines per file
            CLIPEMBED_BACKFILL_BATCH_SIZE="7",  # (a backfill raises the first to this one)
            EMBEDDING_BATCH_POLL_SECONDS="0.05",
            **extra,
        )

    return make


@pytest.fixture
def spawn() -> Iterator[Callable[[dict[str, str]], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-m", "clipembed", "backfill", "--via", "batch", "--json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def batches(url: str) -> list[tuple[Any, ...]]:
    return sql(
        url,
        "SELECT id, state, input_file_id, provider_batch_id, output_file_id "
        "FROM embedding_batches ORDER BY id",
    )


def until(p: subprocess.Popen[str], cond: Callable[[], Any], what: str) -> Any:
    """``cond`` while ``p`` runs (a process that exits early fails at once, with its stderr)."""

    def check() -> Any:
        if p.poll() is not None:
            _, err = p.communicate()
            raise AssertionError(f"the backfill exited ({p.returncode}) before {what}: {err}")
        return cond()

    return wait_until(check, timeout=30, what=what)


def kill(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGKILL


def resume(env: dict[str, str]) -> dict[str, Any]:
    done = clipembed_cli(env, "backfill", "--via", "batch", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_exactly_once(url: str, fake: GatedFake, *, batches_needed: int) -> None:
    live = rows(url)
    assert len(live) == CLIPS
    for row in live:
        assert_correct(row)  # every clip holds the vector of its current text
    stats = fake.stats()
    # no batch submitted twice
    assert stats["batches_created"] == batches_needed, stats["batches_per_input_file"]
    assert stats["input_files_batched_more_than_once"] == 0
    assert stats["batch_custom_ids_more_than_once"] == 0
    # each clip embedded exactly once by the provider, all of it through the Batch API
    assert stats["requests"] == 0
    counts = stats["embedded_counts"]
    assert len(counts) == CLIPS and set(counts.values()) == {1}, counts
    assert {text_digest(clips.embedding_text(clips.ClipText(*r[1:5]))) for r in live} == set(counts)
    # in the database: every batch closed, each clip applied by one batch, written once
    assert {b[1] for b in batches(url)} == {"applied"}
    assert (
        sql(
            url,
            "SELECT clip_id FROM embedding_batch_items WHERE state = 'applied' "
            "GROUP BY clip_id HAVING count(*) > 1",
        )
        == []
    )
    assert sql(
        url, "SELECT count(DISTINCT clip_id) FROM embedding_batch_items WHERE state = 'applied'"
    ) == [(CLIPS,)]
    assert (
        sql(
            url,
            "SELECT clip_id FROM batch_crash_audit GROUP BY clip_id, content_hash HAVING count(*) > 1",
        )
        == []
    )
    assert sql(url, "SELECT count(*) FROM embedding_queue") == [(0,)]


# --------------------------------------------------------------------------- the five points
BATCH_LIST = r"/v1/batches"
BATCH_ONE = r"/v1/batches/batch_[0-9a-f]+"


def test_killed_before_upload(db, fake, env_for, spawn):
    hold = fake.gate.hold("POST", r"/v1/files")
    p = spawn(env_for(db))
    until(
        p,
        lambda: (
            hold.arrived.is_set()
            and [b[1] for b in batches(db)] == ["planned"]
            and fake.stats()["files_uploaded"] == 0
        ),
        "the upload in flight with the batch planned",
    )
    kill(p)
    fake.gate.release_all()
    summary = resume(env_for(db))
    assert summary["applied"] == CLIPS and summary["open_batches"] == 0
    assert_exactly_once(db, fake, batches_needed=1)


def test_killed_after_upload(db, fake, env_for, spawn):
    hold = fake.gate.hold("GET", BATCH_LIST)  # the look-up that comes before creating
    p = spawn(env_for(db))
    until(
        p,
        lambda: (
            hold.arrived.is_set()
            and [b[1] for b in batches(db)] == ["uploaded"]
            and fake.stats()["files_uploaded"] == 1
            and fake.stats()["batches_created"] == 0
        ),
        "the file uploaded and recorded, no batch created",
    )
    kill(p)
    fake.gate.release_all()
    summary = resume(env_for(db))
    assert summary["applied"] == CLIPS
    assert fake.stats()["files_uploaded"] == 1  # the recorded file was used, not uploaded again
    assert_exactly_once(db, fake, batches_needed=1)


def test_killed_after_batch_creation(db, fake, env_for, spawn):
    hold = fake.gate.hold("POST", BATCH_LIST, after=True)  # created, the answer held back
    p = spawn(env_for(db))
    until(
        p,
        lambda: (
            hold.arrived.is_set()
            and fake.stats()["batches_created"] == 1
            and [(b[1], b[3]) for b in batches(db)] == [("uploaded", None)]
        ),
        "the batch created at the provider, its id not recorded",
    )
    kill(p)
    fake.gate.release_all()
    summary = resume(env_for(db))
    assert summary["applied"] == CLIPS
    # adopted: the provider's batch is the one recorded
    ((provider_id,),) = sql(db, "SELECT provider_batch_id FROM embedding_batches")
    assert provider_id in fake.state.batches
    assert_exactly_once(db, fake, batches_needed=1)


def test_killed_during_download(db, fake, env_for, spawn):
    hold = fake.gate.hold("GET", r"/v1/files/[^/]+/content")
    p = spawn(env_for(db))
    until(
        p,
        lambda: (
            hold.arrived.is_set()
            and [(b[1], b[4] is not None) for b in batches(db)] == [("completed", True)]
        ),
        "the results downloading, the batch completed",
    )
    assert sql(db, "SELECT count(*) FROM clips WHERE embedding IS NOT NULL") == [(0,)]
    kill(p)
    fake.gate.release_all()
    summary = resume(env_for(db))
    assert summary["applied"] == CLIPS
    # the finished result was used, not thrown away: nothing ran again at the provider
    assert (
        fake.stats()["batch_lines_processed"]
        == sql(db, "SELECT requests FROM embedding_batches")[0][0]
    )
    assert_exactly_once(db, fake, batches_needed=1)


def test_killed_during_apply(db, fake, env_for, spawn):
    env = env_for(db, EMBEDDING_BATCH_API_MAX_INPUTS="30")  # two batches: one applied, one not
    polls = fake.gate.hold("GET", BATCH_ONE)  # both submitted before the first poll answers
    p = spawn(env)
    until(
        p,
        lambda: polls.arrived.is_set() and [b[1] for b in batches(db)] == ["submitted"] * 2,
        "two batches submitted",
    )
    second = batches(db)[1][0]
    with psycopg.connect(db) as locker:  # a transaction holding one clip of the second batch
        (victim,) = locker.execute(
            "SELECT c.id FROM clips c JOIN embedding_batch_items i ON i.clip_id = c.id "
            "WHERE i.batch_id = %s ORDER BY i.custom_id DESC, i.position DESC LIMIT 1 "
            "FOR UPDATE OF c",
            (second,),
        ).fetchone()
        fake.gate.release_all()
        until(
            p,
            lambda: sql(
                db,
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                # the apply's upsert into the space's table, whose mirror trigger updates clips
                "AND wait_event_type = 'Lock' AND query ILIKE '%%INSERT INTO%%embeddings_space_1%%'",
            ),
            "the apply's write blocked on the locked clip",
        )
        mid = dict(
            sql(
                db,
                "SELECT batch_id, count(*) FROM embedding_batch_items WHERE state = 'applied' "
                "GROUP BY batch_id",
            )
        )
        assert mid == {batches(db)[0][0]: 30}  # the first batch applied, the second mid-way
        assert [b[1] for b in batches(db)] == ["applied", "completed"]
        kill(p)
        locker.rollback()
    assert sql(db, "SELECT embedding IS NULL FROM clips WHERE id = %s", (victim,)) == [(True,)]
    summary = resume(env)
    assert summary["applied"] == 30 and summary["batches_submitted"] == 0
    assert_exactly_once(db, fake, batches_needed=2)
