"""One scenario, two queue stores: the in-memory fake must behave as PostgreSQL does.

The worker's unit tests (tests/unit/test_worker_logic.py) trust
:class:`clipembed.testing.queue_store.InMemoryQueueStore`; this module keeps it honest by
running the same claims, leases, completions and failures against it and against
:class:`clipembed.realtime.queue_store.PgQueueStore` on a real database. Each store comes with a
harness for what only the test does: insert and edit clips (the triggers), expire leases, end
backoffs, and look at the rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest

from clipembed import errors, spaces
from clipembed.db import connection
from clipembed.realtime import queue, queue_store
from clipembed.spaces import registry
from clipembed.testing.queue_store import InMemoryQueueStore
from tests.plugins.queue import insert_clips

DIMS = 768


class MemoryHarness:
    def __init__(self) -> None:
        self.space = registry.Space(
            id=1,
            name="default",
            provider=None,
            model=None,
            dimensions=DIMS,
            storage="vector",
            template_version=1,
            table_name="embeddings_space_1",
            active=True,
        )
        self.store = InMemoryQueueStore([self.space])

    def insert(self, n: int) -> list[Any]:
        return [self.store.insert_clip(f"clip title {i}") for i in range(n)]

    def edit(self, clip_id: Any, title: str) -> None:
        self.store.edit_clip(clip_id, title=title)

    def expire_leases(self) -> None:
        self.store.expire_leases()

    def make_ready(self) -> None:
        self.store.make_ready()

    def queued(self) -> dict[Any, tuple]:
        """clip id -> (generation, attempts, claims, leased_by, backing off, last_error)."""
        now = self.store.clock()
        return {
            r.clip_id: (
                r.generation,
                r.attempts,
                r.claims,
                r.leased_by,
                r.next_attempt_at > now,
                r.last_error,
            )
            for r in self.store.queue.values()
        }

    def dead(self) -> dict[Any, tuple[int, str]]:
        return {d.clip_id: (d.attempts, d.last_error) for d in self.store.dead.values()}


class PgHarness:
    def __init__(self, url: str, store: queue_store.PgQueueStore, space: registry.Space) -> None:
        self.url, self.store, self.space = url, store, space

    def _run(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def insert(self, n: int) -> list[Any]:
        return insert_clips(self.url, n)

    def edit(self, clip_id: Any, title: str) -> None:
        self._run("UPDATE clips SET title = %s WHERE id = %s", (title, clip_id))

    def expire_leases(self) -> None:
        self._run(
            "UPDATE embedding_queue SET leased_until = now() - interval '1 second' "
            "WHERE leased_until IS NOT NULL"
        )

    def make_ready(self) -> None:
        self._run("UPDATE embedding_queue SET next_attempt_at = now()")

    def queued(self) -> dict[Any, tuple]:
        rows = self._run(
            "SELECT clip_id, generation, attempts, claims, leased_by, next_attempt_at > now(), "
            "last_error FROM embedding_queue"
        )
        return {r[0]: tuple(r[1:]) for r in rows}

    def dead(self) -> dict[Any, tuple[int, str]]:
        rows = self._run("SELECT clip_id, attempts, last_error FROM embedding_dead_letters")
        return {r[0]: (r[1], r[2]) for r in rows}


# the database is asked for at run time, so its marker is given here (tests/conftest.py)
@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.db)])
async def harness(request):
    if request.param == "memory":
        yield MemoryHarness()
        return
    url = request.getfixturevalue("database_url")
    pool = await connection.open_pool(url)
    try:
        async with pool.connection() as conn:
            space = await spaces.active(conn)
        yield PgHarness(url, queue_store.PgQueueStore(pool), space)
    finally:
        await pool.close()


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
    return v / np.linalg.norm(v)


def writes(h, items: list[queue.Claimed]) -> list[queue.SpaceWrite]:
    return [queue.SpaceWrite(i, h.space.id, vector(n), b"hash", "m") for n, i in enumerate(items)]


def targets(h) -> list[queue.SpaceTarget]:
    s = h.space
    return [queue.SpaceTarget(s.id, s.table_name, s.storage, s.dimensions)]


async def test_claim_complete_fail_and_the_claim_limit(harness):
    h, store = harness, harness.store
    a, b, c = h.insert(3)

    # claim: a lease for each, counted; leased items are nobody else's
    got = await store.claim(worker="w1", limit=10, lease=60, max_claims=3)
    assert got.dead_lettered == []
    assert {(i.clip_id, i.generation, i.attempts, i.claims) for i in got.items} == {
        (a, 1, 1, 1),
        (b, 1, 1, 1),
        (c, 1, 1, 1),
    }
    assert all(i.enqueued_at is not None for i in got.items)
    assert await store.claim(worker="w2", limit=10, lease=60, max_claims=3) == queue.ClaimResult(
        [], []
    )

    # read: the texts, the spaces (the active one first), nothing stored yet
    rows, spaces_, stored = await store.read([a, b, c])
    assert set(rows) == {a, b, c} and rows[a]["title"] == "clip title 0"
    assert not rows[a]["is_removed"]
    assert spaces_[0].id == h.space.id and stored[h.space.id] == {}

    # extend: ours are renewed; another worker's are reported with their holder
    assert await store.extend([a, b, c], worker="w1", lease=60) == []
    lost = await store.extend([a], worker="w2", lease=60)
    assert lost == [queue.LostLease(a, "w1")]

    # complete: an edit since the claim (a new generation) is neither written nor retired,
    # and is released for a claim at once
    h.edit(a, "a newer text")
    items = {i.clip_id: i for i in got.items}
    done = await store.complete(
        writes(h, list(items.values())), list(items.values()), worker="w1", targets=targets(h)
    )
    assert done == {b, c}
    _, _, stored = await store.read([a, b, c])
    assert set(stored[h.space.id]) == {b, c}
    assert h.queued() == {a: (2, 0, 0, None, False, None)}
    assert await store.extend([b], worker="w1", lease=60) == [queue.LostLease(b, None)]

    # fail: a permanent error backs off (lease released, claims reset), then dead-letters
    [again] = (await store.claim(worker="w2", limit=10, lease=60, max_claims=3)).items
    assert (again.clip_id, again.generation, again.attempts) == (a, 2, 1)
    error = errors.PermanentProviderError("400 invalid input")
    assert await store.fail_many([(again, error)], worker="w2", max_attempts=2) == [False]
    [(gen, attempts, claims, holder, later, last_error)] = h.queued().values()
    assert (gen, attempts, claims, holder, later) == (2, 1, 0, None, True)
    assert last_error == "PermanentProviderError: 400 invalid input"
    assert await store.claim(worker="w2", limit=10, lease=60, max_claims=3) == queue.ClaimResult(
        [], []
    )
    h.make_ready()
    [last] = (await store.claim(worker="w2", limit=10, lease=60, max_claims=3)).items
    # a failure recorded by someone else's name changes nothing
    assert await store.fail_many([(last, error)], worker="w1", max_attempts=2) == [False]
    assert await store.fail_many([(last, error)], worker="w2", max_attempts=2) == [True]
    assert h.queued() == {}
    assert h.dead() == {a: (2, "PermanentProviderError: 400 invalid input")}

    # the claim limit: claimed twice without an outcome, then a suspect is claimed alone, and
    # the next claim past the limit dead-letters it instead of leasing it
    d, e = h.insert(2)
    first = await store.claim(worker="x1", limit=10, lease=60, max_claims=2)
    assert {i.clip_id for i in first.items} == {d, e}
    h.expire_leases()
    second = await store.claim(worker="x2", limit=10, lease=60, max_claims=2)
    [suspect] = second.items
    assert suspect.claims == 2
    assert await store.extend([suspect.clip_id], worker="x1", lease=60) == [
        queue.LostLease(suspect.clip_id, "x2")
    ]
    stale = [i for i in first.items if i.clip_id == suspect.clip_id]
    assert await store.complete(writes(h, stale), stale, worker="x1", targets=targets(h)) == set()
    h.expire_leases()
    third = await store.claim(worker="x3", limit=10, lease=60, max_claims=2)
    assert [(x.clip_id, x.attempts, x.claims) for x in third.dead_lettered] == [
        (suspect.clip_id, 2, 2)
    ]
    [other] = {d, e} - {suspect.clip_id}
    assert [(i.clip_id, i.claims) for i in third.items] == [(other, 2)]
    assert h.dead()[suspect.clip_id] == (2, queue.CLAIM_LIMIT_REASON % 2)
    assert (await store.complete([], [], worker="x3", targets=targets(h))) == set()
