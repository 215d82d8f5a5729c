"""What a Batch API backfill did: counts, tokens, the batch price and the sync price."""

from __future__ import annotations

import dataclasses
from typing import Any

from clipembed.embedding.service import EmbedStats


@dataclasses.dataclass
class BatchSummary:
    batches_submitted: int = 0
    clips_submitted: int = 0
    applied: int = 0
    failed_lines: int = 0
    released: int = 0  # unanswered clips of expired/failed/cancelled batches, re-planned later
    superseded: int = 0
    #: what the provider billed for the applied batches (the service's counter type: its
    #: ``tokens``); the synchronous fallback's own calls are in the service's counters
    embedding: EmbedStats = dataclasses.field(default_factory=EmbedStats)
    cost_usd: float = 0.0
    sync_cost_usd: float = 0.0
    open_batches: int = 0
    index_rebuild_seconds: float = 0.0
    #: clips left to a worker that holds them, or to another open batch
    skipped_held: int = 0
    #: texts that failed in MAX_BATCH_ATTEMPTS batches, embedded synchronously at the end
    sync_inputs: int = 0
    sync_embedded: int = 0
    #: clips given up with their reason (`clipembed failed list`)
    dead_lettered: int = 0
    interrupted: bool = False
    duration: float = 0.0

    @property
    def saving_usd(self) -> float:
        return self.sync_cost_usd - self.cost_usd

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tokens"] = out.pop("embedding")["tokens"]
        out["saving_usd"] = round(self.saving_usd, 6)
        return out

    def lines(self) -> list[str]:
        return [
            "Batch backfill " + ("interrupted" if self.interrupted else "done"),
            f"  Batches submitted: {self.batches_submitted} ({self.clips_submitted} clips)",
            f"  Applied:           {self.applied}",
            f"  Failed lines:      {self.failed_lines} (planned again by this run)",
            f"  Synchronous:       {self.sync_embedded} of {self.sync_inputs} texts that failed"
            " in two batches",
            f"  Dead-lettered:     {self.dead_lettered} (`clipembed failed list` says why)",
            f"  Skipped:           {self.skipped_held} (a worker holds them, or another batch)",
            f"  Re-planned:        {self.released}",
            f"  Edited meanwhile:  {self.superseded}",
            f"  Still open:        {self.open_batches}",
            f"  Tokens:            {self.embedding.tokens}",
            f"  Cost:              ${self.cost_usd:.4f} (sync price ${self.sync_cost_usd:.4f},"
            f" saved ${self.saving_usd:.4f})",
        ]
