"""The durable embedding queue: claim with a lease, complete atomically, back off, dead-letter.

Rules that keep every clip embedded with its current text and none lost:

- **Claim** in a short transaction (``FOR UPDATE SKIP LOCKED``): the items get a lease
  (``leased_until``) and the worker's name, and the transaction commits at once. Nothing is
  held open across the provider call, so a provider error or a dead worker never rolls back or
  blocks anyone else; an expired lease makes the item claimable again.
- **Complete** in one transaction: delete the queue row *only if it is still ours and of the same
  generation* (an edit since the claim bumps the generation: our vector is stale and the next
  claim re-embeds), and write the embedding for exactly the rows deleted.
- **Fail**: decided per item, recorded per batch (:func:`fail_many`: one statement for the items
  that back off, one for the dead letters); the lease is released, ``next_attempt_at`` moves
  back exponentially, and after ``CLIPEMBED_QUEUE_MAX_ATTEMPTS`` the item moves to
  ``embedding_dead_letters`` with its error, where ``clipembed failed retry`` can replay it.
  :func:`decide` is the policy, as a table: a *permanent* error (the provider rejected this text) dead-letters after the attempt
  budget; a *transient* one (5xx, timeout, 429, connection) backs off at most a minute and
  dead-letters only once the budget is spent *and* the item has waited an hour, so a provider
  outage costs latency, never a pile of dead letters (pg_vectorize drops work after two
  failures; we must not), while a text that fails forever still ends in the dead letters
  instead of being retried for ever (Supabase's recipe).
- **Claim limit**: an item whose processing kills the worker is never passed to ``fail``. Each
  claim raises ``claims`` (reset by a recorded failure, an edit, a replay); an item already
  claimed ``CLIPEMBED_QUEUE_MAX_ATTEMPTS`` times without finishing is moved to the dead letters
  by the claim statement instead of being leased again, and an item claimed before without
  finishing is claimed alone so that it cannot take its batch-mates down with it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from clipembed import errors
from clipembed.store.queue_table import (
    CHANNEL,
    CLAIM,
    CLAIMED_TEXTS,
    COMPLETE,
    COPY_DONE,
    COPY_STAGE,
    COPY_STAGE_TYPES,
    CREATE_DONE,
    CREATE_STAGE,
    DEAD_LETTER,
    ENQUEUE,
    EXTEND,
    LIST_DEAD,
    NOTIFY,
    RELEASE_SUPERSEDED,
    REPLAY,
    RETRY_LATER,
)
from clipembed.store.space_table import write_space

BACKOFF_BASE = 2.0  # seconds before the second attempt of an item
BACKOFF_MAX = 600.0  # seconds: the longest an item waits between attempts after permanent errors
TRANSIENT_BACKOFF_MAX = (
    60.0  # seconds: the longest wait after a transient error (outage over -> soon)
)
TRANSIENT_GIVE_UP = 3600.0  # seconds an item keeps retrying transient errors past its budget
ERROR_TEXT_MAX = 2000  # characters of an error kept on the row

CLAIM_LIMIT_REASON = (
    "claimed %s times without finishing: the worker processing it crashed or was killed each "
    "time (its lease expired without a result or a recorded failure)"
)  # a format() pattern for PostgreSQL: %s is the number of claims


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """One leased item: the generation it was claimed at and its attempt number (1 = first)."""

    clip_id: Any
    generation: int
    attempts: int
    enqueued_at: dt.datetime | None = None
    claims: int = 1  # claims of this text without a recorded outcome, this one included


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLettered:
    """An item the claim moved to the dead letters: claimed ``claims`` times, never finished."""

    clip_id: Any
    attempts: int
    claims: int


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimResult:
    items: list[Claimed]  # leased to us
    dead_lettered: list[DeadLettered]  # claim limit reached: moved to the dead letters instead


@dataclasses.dataclass(frozen=True, slots=True)
class LostLease:
    """A lease the heartbeat could not extend; ``held_by`` is None when the row is gone."""

    clip_id: Any
    held_by: str | None


class ErrorKind(enum.Enum):
    PERMANENT = "permanent"  # retrying the same text cannot help (400, empty text, bad key)
    TRANSIENT = "transient"  # the provider or the network, not this text (5xx, 429, timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    dead_letter: bool
    delay: float  # seconds until the next attempt (0 when dead-lettered)


def classify(error: BaseException | str | None) -> ErrorKind:
    """Retryable provider errors are transient; anything else (permanent, unknown) is not."""
    if isinstance(error, errors.RetryableProviderError):
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def retry_delay(attempts: int, *, rand: float | None = None, ceiling: float = BACKOFF_MAX) -> float:
    """Seconds before an item that failed its ``attempts``-th attempt is tried again (jittered).

    Jitter is in [50 %, 100 %] of the exponential step so that items failed together by one
    outage do not all come back in the same instant.
    """
    step = min(ceiling, BACKOFF_BASE * 2 ** min(max(0, attempts - 1), 30))
    r = random.random() if rand is None else rand
    return float(step * (0.5 + r / 2))


def decide(
    attempts: int,
    kind: ErrorKind,
    *,
    max_attempts: int,
    waited: float,
    rand: float | None = None,
) -> Decision:
    """What to do with an item that failed its ``attempts``-th attempt, ``waited`` s after enqueue."""
    if kind is ErrorKind.PERMANENT:
        if attempts >= max_attempts:
            return Decision(True, 0.0)
        return Decision(False, retry_delay(attempts, rand=rand))
    if attempts >= max_attempts and waited >= TRANSIENT_GIVE_UP:
        return Decision(True, 0.0)
    return Decision(False, retry_delay(attempts, rand=rand, ceiling=TRANSIENT_BACKOFF_MAX))


async def claim(
    conn: psycopg.AsyncConnection[Any],
    *,
    worker: str,
    limit: int,
    lease: float,
    max_claims: int,
) -> ClaimResult:
    """Lease up to ``limit`` ready items; dead-letter those already claimed ``max_claims`` times.

    A claim that ends without a result or a recorded failure (the worker crashed, was killed, or
    its lease lapsed) leaves ``claims`` raised; :func:`fail` and an edit of the clip reset it.
    An item already claimed ``max_claims`` times is moved to ``embedding_dead_letters`` by the
    claim itself instead of being handed out again. An item claimed before without finishing is
    claimed alone, so that one that kills its worker does not take its batch down with it.
    """
    params = {
        "limit": limit,
        "lease": lease,
        "worker": worker,
        "max_claims": max(1, max_claims),
        "reason": CLAIM_LIMIT_REASON,
    }
    async with conn.transaction():
        cur = await conn.execute(CLAIM, params)
        rows = await cur.fetchall()
    items = [Claimed(r[1], int(r[2]), int(r[3]), r[5], int(r[4])) for r in rows if r[0]]
    dead = [DeadLettered(r[1], int(r[3]), int(r[4])) for r in rows if not r[0]]
    return ClaimResult(items, dead)


async def read_clips(
    conn: psycopg.AsyncConnection[Any], ids: Sequence[Any]
) -> dict[Any, dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CLAIMED_TEXTS, (list(ids),))
        rows = await cur.fetchall()
    await conn.commit()
    return {r["id"]: r for r in rows}


async def extend(
    conn: psycopg.AsyncConnection[Any], ids: Sequence[Any], *, worker: str, lease: float
) -> list[LostLease]:
    """Extend our leases on ``ids``; returns those no longer ours (re-claimed, or gone)."""
    async with conn.transaction():
        cur = await conn.execute(EXTEND, {"ids": list(ids), "lease": lease, "worker": worker})
        rows = await cur.fetchall()
    return [LostLease(r[0], r[2]) for r in rows if not r[1]]


@dataclasses.dataclass(frozen=True, slots=True)
class SpaceWrite:
    """One vector for one space of a claimed item (see :func:`complete`)."""

    item: Claimed
    space_id: int
    vector: np.ndarray
    content_hash: bytes
    model: str


@dataclasses.dataclass(frozen=True, slots=True)
class SpaceTarget:
    """Where a space's vectors go (its table, storage and dimensions)."""

    id: int
    table: str
    storage: str
    dimensions: int


async def complete(
    conn: psycopg.AsyncConnection[Any],
    writes: Sequence[SpaceWrite],
    retire: Sequence[Claimed],
    *,
    worker: str,
    targets: Sequence[SpaceTarget],
) -> set[Any]:
    """Write vectors into their spaces, then retire items, in one transaction.

    ``writes`` may include items that are not retired (one space failed, the others did not:
    their vectors are paid for and kept, and the retry embeds only what is missing). Returns the
    ids retired. Items whose lease or generation changed are left alone (someone else, or a
    newer text, owns them now): neither their vectors nor their retirement are written.
    """
    if not writes and not retire:
        return set()
    by_id = {t.id: t for t in targets}
    async with conn.transaction(), conn.cursor() as cur:
        if writes:
            await cur.execute(CREATE_STAGE)
            async with cur.copy(COPY_STAGE) as copy:
                copy.set_types(COPY_STAGE_TYPES)
                for w in writes:
                    await copy.write_row(
                        (
                            w.item.clip_id,
                            w.item.generation,
                            w.space_id,
                            w.vector,
                            w.content_hash,
                            w.model,
                        )
                    )
            for space_id in sorted({w.space_id for w in writes}):  # one lock order
                t = by_id[space_id]
                await cur.execute(
                    write_space(t.table, t.storage, t.dimensions),
                    {"space": space_id, "worker": worker},
                )
        if not retire:
            return set()
        await cur.execute(CREATE_DONE)
        async with cur.copy(COPY_DONE) as copy:
            copy.set_types(["uuid", "int8"])
            for item in retire:
                await copy.write_row((item.clip_id, item.generation))
        await cur.execute(COMPLETE, {"worker": worker})
        done = {r[0] for r in await cur.fetchall()}
        # rows still here changed generation while we worked: release them for a new claim now
        await cur.execute(RELEASE_SUPERSEDED, {"worker": worker})
    return done


async def fail(
    conn: psycopg.AsyncConnection[Any],
    item: Claimed,
    error: BaseException | str,
    *,
    worker: str,
    max_attempts: int,
) -> bool:
    """Record a failed attempt; returns True when the item moved to the dead letters.

    A no-op when the item is no longer ours (lease taken over, or a newer generation).
    """
    [dead] = await fail_many(conn, [(item, error)], worker=worker, max_attempts=max_attempts)
    return dead


async def fail_many(
    conn: psycopg.AsyncConnection[Any],
    failures: Sequence[tuple[Claimed, BaseException | str]],
    *,
    worker: str,
    max_attempts: int,
) -> list[bool]:
    """:func:`fail` for a batch's failures in one transaction and at most two statements.

    Returns, per failure, whether the item moved to the dead letters.
    """
    if not failures:
        return []
    now = dt.datetime.now(dt.UTC)
    retry: dict[str, list[Any]] = {"ids": [], "generations": [], "errors": [], "delays": []}
    bury: dict[str, list[Any]] = {"ids": [], "generations": [], "errors": []}
    for item, error in failures:
        waited = 0.0
        if item.enqueued_at is not None:
            waited = (now - item.enqueued_at).total_seconds()
        decision = decide(item.attempts, classify(error), max_attempts=max_attempts, waited=waited)
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        target = bury if decision.dead_letter else retry
        target["ids"].append(item.clip_id)
        target["generations"].append(item.generation)
        target["errors"].append(text[:ERROR_TEXT_MAX])
        if not decision.dead_letter:
            retry["delays"].append(decision.delay)
    buried: set[Any] = set()
    async with conn.transaction():
        if retry["ids"]:
            await conn.execute(RETRY_LATER, retry | {"worker": worker})
        if bury["ids"]:
            cur = await conn.execute(DEAD_LETTER, bury | {"worker": worker})
            buried = {r[0] for r in await cur.fetchall()}
    return [item.clip_id in buried for item, _ in failures]


async def enqueue(conn: psycopg.AsyncConnection[Any], ids: Sequence[Any]) -> int:
    if not ids:
        return 0
    async with conn.transaction():
        cur = await conn.execute(ENQUEUE, (list(ids),))
        count = cur.rowcount
        await conn.execute(NOTIFY, (CHANNEL,))
    return count


async def dead_letters(
    conn: psycopg.AsyncConnection[Any], *, limit: int = 100
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LIST_DEAD, (limit,))
        rows = await cur.fetchall()
    await conn.commit()
    return rows


async def replay(conn: psycopg.AsyncConnection[Any], ids: Sequence[Any] | None) -> int:
    """Move dead letters (all when ``ids`` is None) back onto the queue."""
    async with conn.transaction():
        cur = await conn.execute(REPLAY, {"all": ids is None, "ids": list(ids or [])})
        moved = len(await cur.fetchall())
        await conn.execute(NOTIFY, (CHANNEL,))
    return moved
