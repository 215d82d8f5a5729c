"""The end of a Batch API run: texts that failed in MAX_BATCH_ATTEMPTS batches.

A backfill finishes its own job (issue 19): such a text is embedded synchronously — at most
the failed lines, at the synchronous price — when the run allows it (``backfill --via batch``
does unless ``--no-sync-fallback``), and whatever still fails, or everything when it does not,
is dead-lettered with its reason, where `clipembed failed list` shows it and `failed retry`
replays it. Nothing waits for a worker that may never run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from clipembed.bulk import pipeline
from clipembed.store import batch_tables, space_table

if TYPE_CHECKING:
    from clipembed.batches.runner import BatchBackfill

logger = logging.getLogger(__name__)

CHUNK = 100  # inputs per synchronous request
#: batches a text may fail in before the run embeds it synchronously (or dead-letters it)
MAX_BATCH_ATTEMPTS = 2


async def finish(run: BatchBackfill, items: list[pipeline.Pending]) -> None:
    """Embed ``items`` synchronously (if allowed), dead-letter what is left, with reasons."""
    left: list[pipeline.Pending] = list(items)
    errors_by_id: dict[Any, str] = {}
    if run.sync_fallback:
        left = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            run.summary.sync_inputs += len(chunk)
            outcome = await pipeline.embed_and_write(
                run.svc, run.rt.pool, chunk, space=run.space, source="backfill"
            )
            run.summary.sync_embedded += outcome.written
            async with run.rt.pool.connection() as conn:
                cur = await conn.execute(
                    space_table.embedded_with(run.space.table_name),
                    ([p.id for p in chunk], [p.content_hash for p in chunk]),
                )
                done = {r[0] for r in await cur.fetchall()}
            for p in chunk:
                if p.id not in done:
                    left.append(p)
                    if outcome.last_error:
                        errors_by_id[p.id] = f"synchronously too: {outcome.last_error}"
    if not left:
        return
    async with run.rt.pool.connection() as conn:
        cur = await conn.execute(batch_tables.LAST_ERRORS, ([p.id for p in left],))
        batch_reasons = {r[0]: r[1] for r in await cur.fetchall()}
        reasons = []
        for p in left:
            why = batch_reasons.get(p.id) or "Batch API line failed"
            extra = errors_by_id.get(p.id)
            reasons.append(
                (
                    f"failed in {MAX_BATCH_ATTEMPTS} Batch API batches ({why})"
                    + (f"; {extra}" if extra else "")
                )[:1000]
            )
        await conn.execute(
            batch_tables.DEAD_LETTER, {"ids": [p.id for p in left], "reasons": reasons}
        )
    run.summary.dead_lettered += len(left)
    logger.warning("clips dead-lettered after failing in batches", extra={"clips": len(left)})
