"""A claimed batch embedded into every embedding space (the worker's dual write).

Every space that exists is maintained (see :mod:`clipembed.spaces.registry`): while a candidate
space is built, each new or edited clip is embedded into the active space *and* the candidate,
so the candidate is complete when its backfill ends; after a promote the previous space stays
current for a rollback. The spaces are read again for every batch, after its claim: a space
added before an edit is seen by the worker that handles the edit.

Per space, an item whose vector there already matches its text costs nothing (the plan). The
spaces are embedded concurrently; an item is retired when every space has its vector. When one
space fails and another succeeds, the good vectors are still written (they are paid for) and
the retry embeds only the missing space.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from clipembed import spaces as spaces_mod
from clipembed.realtime import queue
from clipembed.realtime.worker_plan import plan
from clipembed.store import space_table

if TYPE_CHECKING:
    from clipembed.embedding.service import EmbeddingService, EmbedOutcome
    from clipembed.spaces import Space

    ServiceFor = Callable[[Space], Awaitable[EmbeddingService]]


@dataclasses.dataclass
class BatchWork:
    """What embedding a claimed batch into every space produced."""

    writes: list[queue.SpaceWrite] = dataclasses.field(default_factory=list)
    failures: dict[Any, tuple[queue.Claimed, BaseException]] = dataclasses.field(
        default_factory=dict
    )
    targets: list[queue.SpaceTarget] = dataclasses.field(default_factory=list)
    unchanged: int = 0  # items the active space already had current
    #: per space that called its provider: (space, service, outcome)
    outcomes: list[tuple[Space, EmbeddingService, EmbedOutcome]] = dataclasses.field(
        default_factory=list
    )
    embedded_anything: bool = False

    def retire(self, items: list[queue.Claimed]) -> list[queue.Claimed]:
        return [i for i in items if i.clip_id not in self.failures]


async def read(
    conn: psycopg.AsyncConnection[Any], ids: list[Any]
) -> tuple[dict[Any, dict[str, Any]], list[Space], dict[int, dict[Any, bytes]]]:
    """The clips' text columns, every space, and each space's stored hashes for these clips."""
    rows = await queue.read_clips(conn, ids)
    spaces = await spaces_mod.all_spaces(conn)
    stored: dict[int, dict[Any, bytes]] = {}
    for space in spaces:
        cur = await conn.execute(space_table.hashes(space.table_name), (ids,))
        stored[space.id] = {r[0]: bytes(r[1]) for r in await cur.fetchall()}
    await conn.commit()
    spaces.sort(key=lambda s: not s.active)  # the active space first
    return rows, spaces, stored


def current_generations(
    items: list[queue.Claimed], rows: dict[Any, dict[str, Any]]
) -> list[queue.Claimed]:
    """Each item at the generation its text was read with. An edit between the claim and the
    read bumps the generation and keeps the lease: the text read is the new one, and completing
    it under the claimed generation would count it superseded and pay for it again. Completion
    still writes only rows leased by this worker at that generation."""
    out = []
    for item in items:
        row = rows.get(item.clip_id)
        now = row.get("queue_generation") if row is not None else None
        if now is not None and int(now) > item.generation:
            item = dataclasses.replace(item, generation=int(now))
        out.append(item)
    return out


async def embed(
    service_for: ServiceFor,
    items: list[queue.Claimed],
    rows: dict[Any, dict[str, Any]],
    spaces: list[Space],
    stored: dict[int, dict[Any, bytes]],
) -> BatchWork:
    """Embed the batch into every space that lacks a current vector for an item."""
    work = BatchWork(
        targets=[queue.SpaceTarget(s.id, s.table_name, s.storage, s.dimensions) for s in spaces]
    )

    async def one(space: Space) -> None:
        try:
            svc = await service_for(space)
        except Exception as exc:  # a space whose provider cannot be opened fails its items
            for item in items:
                row = rows.get(item.clip_id)
                if row is not None and not row["is_removed"]:
                    work.failures.setdefault(item.clip_id, (item, exc))
            return
        todo = plan(items, rows, stored[space.id], model=svc.model, dimensions=svc.dimensions)
        if space.active:
            work.unchanged += todo.unchanged
        if not todo.embed:
            return
        work.embedded_anything = True
        outcome = await svc.embed_detailed([t for _, t, _ in todo.embed])
        for (item, _, digest), vec, err in zip(
            todo.embed, outcome.vectors, outcome.errors, strict=True
        ):
            if vec is not None:
                work.writes.append(queue.SpaceWrite(item, space.id, vec, digest, svc.model))
            else:
                error = err or RuntimeError("no vector and no error")
                work.failures.setdefault(item.clip_id, (item, error))
        work.outcomes.append((space, svc, outcome))

    if len(spaces) == 1:
        await one(spaces[0])
        return work
    try:
        async with asyncio.TaskGroup() as tasks:
            for space in spaces:
                tasks.create_task(one(space))
    except BaseExceptionGroup as group:
        # the others were cancelled and awaited; surface the cause as the worker always has
        raise group.exceptions[0] from None
    return work
