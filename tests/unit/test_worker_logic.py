"""The worker's decisions through the in-memory queue store: no PostgreSQL, no provider.

Each test drives :class:`clipembed.realtime.worker.Worker` (``run_once``/``drain``) against
:class:`clipembed.testing.queue_store.InMemoryQueueStore` with a manual clock and a fake
embedding service; the store's contract is checked against PostgreSQL by
``tests/integration/test_queue_store_contract.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from clipembed import clips, errors, runtime, settings
from clipembed.embedding import service
from clipembed.realtime import queue, worker
from clipembed.spaces import registry
from clipembed.testing.fakeopenai import expected_vector
from clipembed.testing.queue_store import InMemoryQueueStore, ManualClock
from tests.plugins.waiting import wait_for

DIMS = 8
CFG = settings.Settings(
    embedding_provider="openai",
    openai_api_key="sk-test-0123456789abcdef",
    embedding_model="text-embedding-3-small",
    embedding_dimensions=DIMS,
    clipembed_queue_lease_seconds=30,
    clipembed_queue_max_attempts=3,
)
ACTIVE = registry.Space(
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


class FakeService:
    """Vectors as the fake OpenAI server computes them; texts containing a marker fail."""

    def __init__(self, model: str = "fake-model", dimensions: int = DIMS) -> None:
        self.model, self.dimensions = model, dimensions
        self.calls: list[list[str]] = []
        self.errors: dict[str, BaseException] = {}  # marker in the text -> its error
        self.during: Callable[[], None] | None = None  # runs while the "request" is in flight
        self.release: asyncio.Event | None = None  # when set, the request waits for it

    async def embed_detailed(self, texts: list[str]) -> service.EmbedOutcome:
        self.calls.append(list(texts))
        if self.during is not None:
            self.during()
        if self.release is not None:
            await self.release.wait()
        errs = [next((e for m, e in self.errors.items() if m in t), None) for t in texts]
        vectors = [
            None if e else expected_vector(t, self.dimensions)
            for t, e in zip(texts, errs, strict=True)
        ]
        stats = service.EmbedStats(texts=len(texts), requests=1)
        return service.EmbedOutcome(vectors, errs, [False] * len(texts), stats)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock) -> InMemoryQueueStore:
    return InMemoryQueueStore([ACTIVE], clock=clock)


@pytest.fixture
def svc() -> FakeService:
    return FakeService()


@pytest.fixture
def make_worker(store, svc) -> Callable[..., worker.Worker]:
    def make(name: str = "w", **kw) -> worker.Worker:
        rt = runtime.Runtime(
            settings=CFG, database_url="", pool=None, dimensions=DIMS, service=svc, space=ACTIVE
        )
        return worker.Worker(rt, name=name, batch_size=kw.pop("batch_size", 10), store=store, **kw)

    return make


def text_of(store: InMemoryQueueStore, clip_id) -> str:
    return clips.embedding_text(clips.ClipText.from_row(store.clips[clip_id]))


def assert_current(store: InMemoryQueueStore, clip_id, space=ACTIVE, model="fake-model") -> None:
    stored = store.vectors[space.id][clip_id]
    text = text_of(store, clip_id)
    np.testing.assert_allclose(stored.vector, expected_vector(text, space.dimensions))
    assert stored.content_hash == clips.content_hash(text, model, space.dimensions)


async def test_a_batch_is_embedded_written_and_retired(store, svc, make_worker):
    ids = [store.insert_clip(f"clip {i}") for i in range(3)]
    stats = await make_worker().drain()
    assert (stats.claimed, stats.embedded, stats.failed) == (3, 3, 0)
    assert svc.calls == [[text_of(store, i) for i in ids]]  # one request for the batch
    assert store.queue == {}
    for cid in ids:
        assert_current(store, cid)
    [usage] = store.usage
    assert (usage["model"], usage["clips"], usage["failed"]) == ("fake-model", 3, 0)


async def test_an_unchanged_text_is_retired_without_a_provider_call(store, svc, make_worker):
    [cid] = [store.insert_clip("same")]
    w = make_worker()
    await w.drain()
    store.edit_clip(cid, title="same")  # an edit that changes nothing embedded
    await w.drain()
    assert (len(svc.calls), w.stats.unchanged, w.stats.embedded) == (1, 1, 1)
    assert store.queue == {}


async def test_a_clip_deleted_since_its_claim_is_retired_without_a_call(store, svc, make_worker):
    cid = store.insert_clip()
    real_read = store.read

    async def read_after_delete(ids):
        store.clips.pop(cid)
        return await real_read(ids)

    store.read = read_after_delete
    assert await make_worker().run_once() == 1
    assert svc.calls == [] and store.queue == {} and store.vectors[ACTIVE.id] == {}


async def test_a_permanent_error_backs_off_then_dead_letters(store, svc, clock, make_worker):
    ids = [store.insert_clip(f"clip {i}") for i in range(3)]
    store.edit_clip(ids[1], title="POISON")
    svc.errors["POISON"] = errors.PermanentProviderError("400 invalid input")
    w = make_worker()
    w.max_attempts = 2
    assert await w.run_once() == 3
    assert set(store.queue) == {ids[1]}  # the batch-mates are done
    row = store.queue[ids[1]]
    assert (row.attempts, row.claims, row.leased_by) == (1, 0, None)
    assert row.next_attempt_at > clock() and row.last_error.startswith("PermanentProviderError")
    assert await w.run_once() == 0  # backing off: nothing ready
    clock.advance(queue.BACKOFF_MAX)
    assert await w.run_once() == 1
    assert store.queue == {} and ids[1] not in store.vectors[ACTIVE.id]
    dead = store.dead[ids[1]]
    assert dead.attempts == 2 and dead.last_error.startswith("PermanentProviderError: 400")
    assert (w.stats.embedded, w.stats.failed, w.stats.dead_lettered) == (2, 2, 1)


async def test_a_provider_outage_costs_retries_then_an_hour_before_dead_letters(
    store, svc, clock, make_worker
):
    cid = store.insert_clip("outage")
    svc.errors["outage"] = errors.RetryableProviderError("503 unavailable")
    w = make_worker()
    w.max_attempts = 2
    for attempt in range(1, 6):
        assert await w.run_once() == 1
        assert store.queue[cid].attempts == attempt and cid not in store.dead
        clock.advance(queue.TRANSIENT_BACKOFF_MAX)  # the longest a transient backoff lasts
    clock.advance(queue.TRANSIENT_GIVE_UP)
    assert await w.run_once() == 1
    assert cid in store.dead and w.stats.dead_lettered == 1


async def test_an_edit_during_the_batch_is_not_overwritten_with_the_old_vector(
    store, svc, make_worker
):
    cid = store.insert_clip("before")
    svc.during = lambda: store.edit_clip(cid, title="after")  # the trigger bumps the generation
    w = make_worker()
    assert await w.run_once() == 1
    assert (w.stats.embedded, w.stats.superseded) == (0, 1)
    assert store.vectors[ACTIVE.id] == {}  # the old text's vector is not written
    row = store.queue[cid]
    assert (row.generation, row.leased_by) == (2, None)  # released for a claim at once
    svc.during = None
    assert await w.run_once() == 1
    assert svc.calls[-1] == [text_of(store, cid)] and "after" in svc.calls[-1][0]
    assert_current(store, cid)
    assert store.queue == {}


async def test_a_lost_lease_is_logged_once_and_its_result_discarded(store, svc, make_worker):
    ids = [store.insert_clip(f"clip {i}") for i in range(2)]
    svc.release = asyncio.Event()
    taken: list[queue.ClaimResult] = []

    def stall_and_lose_one() -> None:
        # A stalls past its lease; B claims an item whose lease lapsed (alone: a suspect)
        store.expire_leases()
        taken.append(asyncio.get_running_loop().create_task(store_claim("B")))

    async def store_claim(name):
        return await store.claim(worker=name, limit=10, lease=60, max_claims=5)

    svc.during = stall_and_lose_one
    a = make_worker("A")
    a.lease = 0.03  # the heartbeat runs every 10 ms
    task = asyncio.create_task(a.run_once())
    await wait_for(lambda: a.stats.leases_lost == 1, what="A's heartbeat to find the lost lease")
    [b_claim] = [t.result() for t in taken]
    [stolen] = b_claim.items
    assert stolen.claims == 2
    svc.release.set()
    assert await task == 2
    assert (a.stats.embedded, a.stats.superseded, a.stats.leases_lost) == (1, 1, 1)
    [kept] = set(ids) - {stolen.clip_id}
    assert set(store.vectors[ACTIVE.id]) == {kept}
    assert store.queue[stolen.clip_id].leased_by == "B"  # B finishes it


class WorkerKilled(Exception):
    """Stands for the process dying mid-batch: nothing is completed or failed."""


async def test_an_item_that_kills_its_worker_goes_alone_to_the_dead_letters(
    store, svc, make_worker
):
    ids = [store.insert_clip(f"clip {i}") for i in range(6)]
    store.edit_clip(ids[2], title="OOM bomb")

    def maybe_die() -> None:
        if any("OOM bomb" in t for t in svc.calls[-1]):
            raise WorkerKilled

    svc.during = maybe_die
    w = make_worker()  # CLIPEMBED_QUEUE_MAX_ATTEMPTS=3
    crashes = 0
    for _ in range(30):
        try:
            if await w.run_once() == 0:
                break
        except WorkerKilled:
            crashes += 1
            store.expire_leases()  # a new worker starts; the dead one's leases run out
    else:
        raise AssertionError("the queue never drained")
    assert crashes == 3
    assert len(svc.calls[0]) == 6 and all(len(c) == 1 for c in svc.calls[1:])
    assert store.dead[ids[2]].last_error == queue.CLAIM_LIMIT_REASON % 3
    assert set(store.vectors[ACTIVE.id]) == set(ids) - {ids[2]}
    assert store.queue == {}


async def test_completion_is_retried_through_a_database_outage(
    store, svc, make_worker, monkeypatch
):
    monkeypatch.setattr(worker, "ERROR_DELAY", 0.01)
    ids = [store.insert_clip(f"clip {i}") for i in range(3)]
    store.fail_next("complete", OSError("connection refused"), times=2)
    w = make_worker()
    assert await w.run_once() == 3
    assert (w.stats.embedded, w.stats.db_errors) == (3, 2)
    assert len(svc.calls) == 1  # the vectors were paid for once and kept
    assert store.queue == {} and set(store.vectors[ACTIVE.id]) == set(ids)


async def test_one_space_failing_keeps_the_other_spaces_vectors(store, svc, make_worker):
    candidate = registry.Space(
        id=2,
        name="cand",
        provider="openai",
        model="text-embedding-3-large",
        dimensions=4,
        storage="halfvec",
        template_version=1,
        table_name="embeddings_space_2",
    )
    store.spaces.append(candidate)
    store.vectors[candidate.id] = {}
    other = FakeService(model="text-embedding-3-large", dimensions=4)
    other.errors["clip"] = errors.RetryableProviderError("503")
    w = make_worker()
    w.runtime.services[runtime.space_key(candidate)] = other
    cid = store.insert_clip("clip 0")
    assert await w.run_once() == 1
    assert_current(store, cid)  # paid for: written although the item is not retired
    assert store.queue[cid].attempts == 1 and store.vectors[candidate.id] == {}
    other.errors.clear()
    store.make_ready()
    assert await w.run_once() == 1
    assert len(svc.calls) == 1  # the retry embeds only the missing space
    assert_current(store, cid, candidate, model="text-embedding-3-large")
    assert store.queue == {}
