"""A worker's pure decisions: what a claimed batch needs, and whether to claim again at once."""

from __future__ import annotations

import dataclasses
from typing import Any

from clipembed import clips
from clipembed.realtime import queue


@dataclasses.dataclass(frozen=True)
class Plan:
    """A claimed batch sorted by what it needs in one space (pure: see :func:`plan`)."""

    embed: list[tuple[queue.Claimed, str, bytes]]  # item, text, content hash
    retire: list[queue.Claimed]  # nothing to write in this space
    unchanged: int  # of ``retire``: the stored vector already matches the text


def plan(
    items: list[queue.Claimed],
    rows: dict[Any, dict[str, Any]],
    stored: dict[Any, bytes],
    *,
    model: str,
    dimensions: int,
) -> Plan:
    """Decide per item, for one space: embed its current text, or nothing to do there.

    Nothing to do: a clip deleted or removed since it was queued, and a clip whose vector in
    the space (``stored``: clip id -> content hash) already has the hash of its current text,
    model and dimensions (an edit undone, a row the backfill got to first, a reconciliation
    race, a space another attempt already wrote).
    """
    embed: list[tuple[queue.Claimed, str, bytes]] = []
    retire: list[queue.Claimed] = []
    unchanged = 0
    for item in items:
        row = rows.get(item.clip_id)
        if row is None or row["is_removed"]:
            retire.append(item)
            continue
        text = clips.embedding_text(clips.ClipText.from_row(row))
        digest = clips.content_hash(text, model, dimensions)
        have = stored.get(item.clip_id)
        if have is not None and bytes(have) == digest:
            unchanged += 1
            retire.append(item)
        else:
            embed.append((item, text, digest))
    return Plan(embed, retire, unchanged)


@dataclasses.dataclass
class WorkerStats:
    claimed: int = 0
    embedded: int = 0
    unchanged: int = 0  # retired without a provider call
    failed: int = 0
    claims: int = 0  # claim statements run (empty ones included)
    dead_lettered: int = 0
    superseded: int = 0  # lease lost or text changed meanwhile: someone else finishes it
    leases_lost: int = 0  # the heartbeat found the item re-claimed by another worker, or gone
    db_errors: int = 0
    errors: int = 0  # unexpected exceptions (logged with a traceback)


def more_ready(result: queue.ClaimResult, batch_size: int) -> bool:
    """Whether a claim suggests that more is ready right now, so the next claim need not wait.

    A full batch, of course. Also a claim that dead-lettered items (they took places among its
    candidates) or took a *suspect* (claimed before without finishing: claimed alone while the
    rest of the queue waits behind it), as after a crash the items come back one per claim.
    """
    if len(result.items) + len(result.dead_lettered) >= batch_size or result.dead_lettered:
        return True
    return any(item.claims > 1 for item in result.items)
