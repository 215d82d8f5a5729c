"""An in-memory queue that honours the PostgreSQL queue's contract, for the worker's unit tests.

:class:`InMemoryQueueStore` implements :class:`clipembed.realtime.queue_store.QueueStore` with
dictionaries instead of tables (procrastinate's ``InMemoryConnector``), statement for statement
after :mod:`clipembed.store.queue_table`:

- **claim**: ready rows (``next_attempt_at`` passed, no live lease, not parked in a batch) in
  queue order, up to ``limit``; those already claimed ``max_claims`` times go to the dead
  letters instead; a *suspect* (claimed before without finishing) at the head is claimed alone,
  otherwise only clean rows. A claim raises ``attempts`` and ``claims`` and sets the lease.
- **complete**: a vector is written, and an item retired, only while the row is still leased by
  the caller *at the claimed generation*; retired rows of a newer generation are released.
- **fail_many**: :func:`clipembed.realtime.queue.decide` per item; backing off releases the lease,
  resets ``claims`` and moves ``next_attempt_at``; a dead letter leaves the queue.
- **extend**: renews the rows the caller still holds and reports the others with their holder.

The clips' triggers are methods (:meth:`insert_clip`, :meth:`edit_clip`), and so are the
tests' levers (:meth:`expire_leases`, :meth:`make_ready`, :meth:`fail_next`). Time comes from
``clock`` (wall-clock UTC by default; :class:`ManualClock` to step it). Each method runs without
awaiting, so it is atomic towards other coroutines, as each statement's transaction is.
``tests/integration/test_queue_store_contract.py`` runs one scenario against this store and the
PostgreSQL one, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from clipembed.realtime import queue

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbedStats
    from clipembed.realtime.queue_store import BatchInput, QueueStore
    from clipembed.spaces import Space

TEXT_COLUMNS = ("title", "broadcaster_name", "creator_name", "game_name")


class ManualClock:
    """A clock that moves only when told (``advance``): leases and backoffs without waiting."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class QueueRow:
    """One ``embedding_queue`` row."""

    clip_id: Any
    enqueued_at: dt.datetime
    next_attempt_at: dt.datetime
    seq: int  # insertion order: the tie-break PostgreSQL's heap order gives for equal times
    generation: int = 1
    attempts: int = 0
    claims: int = 0
    leased_until: dt.datetime | None = None
    leased_by: str | None = None
    last_error: str | None = None
    in_batch: int | None = None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One ``embedding_dead_letters`` row."""

    clip_id: Any
    attempts: int
    last_error: str
    enqueued_at: dt.datetime
    failed_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class StoredVector:
    """One row of a space's table."""

    vector: np.ndarray
    content_hash: bytes
    model: str


class InMemoryQueueStore:
    """The queue, the clips' text columns and the spaces' vectors, in memory."""

    def __init__(
        self, spaces: Sequence[Space], *, clock: Callable[[], dt.datetime] = wall_clock
    ) -> None:
        self.spaces = list(spaces)
        self.clock = clock
        self.clips: dict[Any, dict[str, Any]] = {}
        self.queue: dict[Any, QueueRow] = {}
        self.dead: dict[Any, DeadLetter] = {}
        self.vectors: dict[int, dict[Any, StoredVector]] = {s.id: {} for s in self.spaces}
        self.usage: list[dict[str, Any]] = []  # one entry per record_usage call
        self.faults: dict[str, list[BaseException]] = {}  # method -> errors its next calls raise
        self._seq = itertools.count()

    # --- the clips' triggers and the tests' levers ------------------------------------------
    def insert_clip(self, title: str = "a clip", **columns: Any) -> Any:
        """A new live clip, queued as the insert trigger does; returns its id."""
        clip_id = columns.pop("id", None) or uuid.uuid4()
        row = {"id": clip_id, "broadcaster_name": "streamer", "creator_name": "creator"}
        row |= {"game_name": None, "is_removed": False, "title": title} | columns
        self.clips[clip_id] = row
        if not row["is_removed"]:
            self._requeue(clip_id)
        return clip_id

    def edit_clip(self, clip_id: Any, **columns: Any) -> None:
        """Change a clip's columns; an edit re-queues it with a new generation (the trigger)."""
        self.clips[clip_id].update(columns)
        if self.clips[clip_id]["is_removed"]:
            self.queue.pop(clip_id, None)
        else:
            self._requeue(clip_id)

    def _requeue(self, clip_id: Any) -> None:
        now = self.clock()
        row = self.queue.get(clip_id)
        if row is None:
            self.queue[clip_id] = QueueRow(clip_id, now, now, next(self._seq))
        else:
            row.generation += 1
            row.next_attempt_at, row.attempts, row.claims = now, 0, 0
            row.last_error, row.in_batch = None, None
        self.dead.pop(clip_id, None)

    def expire_leases(self) -> int:
        """Every lease runs out now, as some time after its worker died."""
        leased = [r for r in self.queue.values() if r.leased_until is not None]
        for row in leased:
            row.leased_until = self.clock() - dt.timedelta(seconds=1)
        return len(leased)

    def make_ready(self) -> None:
        """Every backoff is over."""
        for row in self.queue.values():
            row.next_attempt_at = min(row.next_attempt_at, self.clock())

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` and change nothing."""
        self.faults.setdefault(method, []).extend([error] * times)

    def _fault(self, method: str) -> None:
        pending = self.faults.get(method)
        if pending:
            raise pending.pop(0)

    def _ours(self, clip_id: Any, generation: int, worker: str) -> QueueRow | None:
        row = self.queue.get(clip_id)
        if row is None or row.generation != generation or row.leased_by != worker:
            return None
        return row

    # --- QueueStore ---------------------------------------------------------------------------
    async def claim(
        self, *, worker: str, limit: int, lease: float, max_claims: int
    ) -> queue.ClaimResult:
        self._fault("claim")
        now, max_claims = self.clock(), max(1, max_claims)
        ready = [
            r
            for r in self.queue.values()
            if r.next_attempt_at <= now
            and (r.leased_until is None or r.leased_until < now)
            and r.in_batch is None
        ]
        ready.sort(key=lambda r: (r.next_attempt_at, r.enqueued_at, r.seq))
        candidates = ready[: max(0, limit)]
        dead: list[queue.DeadLettered] = []
        for row in [r for r in candidates if r.claims >= max_claims]:
            del self.queue[row.clip_id]
            reason = queue.CLAIM_LIMIT_REASON % row.claims
            self.dead[row.clip_id] = DeadLetter(
                row.clip_id, row.attempts, reason, row.enqueued_at, now
            )
            dead.append(queue.DeadLettered(row.clip_id, row.attempts, row.claims))
        live = [r for r in candidates if r.claims < max_claims]
        picked: list[QueueRow] = []
        if live:
            head = min(live, key=lambda r: (r.next_attempt_at, r.enqueued_at, r.clip_id))
            picked = [head] if head.claims > 0 else [r for r in live if r.claims == 0]
        for row in picked:
            row.leased_until = now + dt.timedelta(seconds=lease)
            row.leased_by = worker
            row.attempts += 1
            row.claims += 1
        items = [
            queue.Claimed(r.clip_id, r.generation, r.attempts, r.enqueued_at, r.claims)
            for r in picked
        ]
        return queue.ClaimResult(items, dead)

    async def read(self, ids: Sequence[Any]) -> BatchInput:
        self._fault("read")
        rows = {i: dict(self.clips[i]) for i in ids if i in self.clips}
        spaces = sorted(self.spaces, key=lambda s: not s.active)
        stored = {
            s.id: {i: v.content_hash for i, v in self.vectors[s.id].items() if i in rows}
            for s in self.spaces
        }
        return rows, spaces, stored

    async def extend(
        self, ids: Sequence[Any], *, worker: str, lease: float
    ) -> list[queue.LostLease]:
        self._fault("extend")
        lost = []
        for clip_id in ids:
            row = self.queue.get(clip_id)
            if row is not None and row.leased_by == worker:
                row.leased_until = self.clock() + dt.timedelta(seconds=lease)
            else:
                lost.append(queue.LostLease(clip_id, None if row is None else row.leased_by))
        return lost

    async def complete(
        self,
        writes: Sequence[queue.SpaceWrite],
        retire: Sequence[queue.Claimed],
        *,
        worker: str,
        targets: Sequence[queue.SpaceTarget],
    ) -> set[Any]:
        self._fault("complete")
        if not writes and not retire:
            return set()
        by_id = {t.id: t for t in targets}
        for w in writes:  # checked first: PostgreSQL rolls the whole transaction back
            dims = by_id[w.space_id].dimensions
            if len(w.vector) != dims:
                raise psycopg.errors.DataException(
                    f"expected {dims} dimensions, not {len(w.vector)}"
                )
        for w in writes:
            if self._ours(w.item.clip_id, w.item.generation, worker) is not None:
                self.vectors[w.space_id][w.item.clip_id] = StoredVector(
                    w.vector, w.content_hash, w.model
                )
        done = set()
        for item in retire:
            if self._ours(item.clip_id, item.generation, worker) is not None:
                del self.queue[item.clip_id]
                done.add(item.clip_id)
        for item in retire:  # still here: a newer text; release it for a new claim now
            row = self.queue.get(item.clip_id)
            if row is not None and row.leased_by == worker:
                row.leased_until = row.leased_by = None
        return done

    async def fail_many(
        self,
        failures: Sequence[tuple[queue.Claimed, BaseException | str]],
        *,
        worker: str,
        max_attempts: int,
    ) -> list[bool]:
        self._fault("fail_many")
        now = self.clock()
        buried = set()
        for item, error in failures:
            waited = 0.0 if item.enqueued_at is None else (now - item.enqueued_at).total_seconds()
            kind = queue.classify(error)
            decision = queue.decide(item.attempts, kind, max_attempts=max_attempts, waited=waited)
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            text = text[: queue.ERROR_TEXT_MAX]
            row = self._ours(item.clip_id, item.generation, worker)
            if row is None:
                continue
            if decision.dead_letter:
                del self.queue[item.clip_id]
                self.dead[item.clip_id] = DeadLetter(
                    item.clip_id, row.attempts, text, row.enqueued_at, now
                )
                buried.add(item.clip_id)
            else:
                row.leased_until = row.leased_by = None
                row.last_error, row.claims = text, 0
                row.next_attempt_at = now + dt.timedelta(seconds=decision.delay)
        return [item.clip_id in buried for item, _ in failures]

    async def record_usage(
        self,
        *,
        model: str,
        clips: int,
        failed: int,
        stats: EmbedStats,
        price_per_million: float,
    ) -> None:
        self._fault("record_usage")
        if clips or failed or stats.requests or stats.cache_hits:  # as rollups.record
            self.usage.append({"model": model, "clips": clips, "failed": failed, "stats": stats})


def _conforms(store: InMemoryQueueStore) -> QueueStore:
    return store  # mypy checks here that the fake has the protocol's shape
