"""What a backfill did: the summary (the original's lines, or JSON) and the exit code."""

from __future__ import annotations

import dataclasses
from typing import Any

from clipembed.embedding.service import EmbedStats

#: The service's counters a summary's JSON shows at its top level (the names it always had).
FLAT = ("requests", "tokens", "cache_hits", "cache_misses", "retries", "rate_limited")


@dataclasses.dataclass
class Summary:
    """What a run did; printed as the original's summary, or as JSON."""

    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    duration: float = 0.0
    last_error: str | None = None
    #: the embedding service's counters over the run (requests, tokens, cache, retries); a dry
    #: run's estimate fills the same counters
    embedding: EmbedStats = dataclasses.field(default_factory=EmbedStats)
    estimated_cost_usd: float = 0.0
    interrupted: bool = False
    dry_run: bool = False
    would_embed: int = 0
    estimated_seconds: float | None = None
    index_rebuilt: bool = False
    superseded: int = 0  # embedded, but the clip was edited meanwhile: left for the next run
    batch_cost_usd: float | None = None  # --dry-run --via batch: the Batch API's price
    space: str | None = None  # the embedding space filled
    #: adopted table: vectors copied back into its embedding column (no provider call), or
    #: with --dry-run those that would be
    mirror_restored: int = 0
    #: clips left to the open Batch API batches that hold them (`clipembed batches list`)
    in_open_batch: int = 0
    #: seconds the pace (--max-rate, or the adaptive one) held the backfill back
    paced_seconds: float = 0.0
    #: the adaptive pace (clipembed.bulk.adaptive_pace): how often it changed, its lowest clips/s
    pace_changes: int = 0
    slowest_pace: float | None = None
    #: the index policy's decision and why (clipembed.bulk.index_policy), and the build's time:
    #: ``duration`` includes it, so it is the time until every clip is searchable by vector
    index_policy: str = ""
    index_seconds: float = 0.0

    @property
    def average_ms(self) -> float:
        return self.duration * 1000 / self.processed if self.processed else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        counters = out.pop("embedding")
        out.update({k: counters[k] for k in FLAT})
        out["average_ms_per_clip"] = round(self.average_ms, 3)
        out["cache_hit_rate"] = round(self.embedding.cache_hit_rate, 4)
        out["duration"] = round(self.duration, 3)
        out["estimated_cost_usd"] = round(self.estimated_cost_usd, 6)
        return out

    def fill_service_stats(self, before: EmbedStats, after: EmbedStats, price: float) -> None:
        """The service's counters over the run, and what its tokens cost."""
        self.embedding = after.since(before)
        self.estimated_cost_usd = self.embedding.tokens * price / 1_000_000

    def lines(self) -> list[str]:
        if self.dry_run:
            eta = "n/a" if self.estimated_seconds is None else duration(self.estimated_seconds)
            return [
                "Backfill dry run (nothing sent, nothing written)",
                f"  Total:            {self.total}",
                f"  Would embed:      {self.would_embed}",
                f"  Skipped:          {self.skipped}",
                f"  Already cached:   {self.embedding.cache_hits}",
                f"  API requests:     {self.embedding.requests}",
                f"  Tokens:           {self.embedding.tokens}",
                f"  Estimated cost:   ${self.estimated_cost_usd:.4f}",
                f"  Estimated time:   {eta} at the configured rate limits",
                *self._skip_lines(),
            ] + (
                [
                    f"  Via Batch API:    ${self.batch_cost_usd:.4f} (half price, within 24 h;"
                    " no synchronous requests)"
                ]
                if self.batch_cost_usd is not None
                else []
            )
        return [
            "Backfill " + ("interrupted" if self.interrupted else "complete"),
            f"  Total:            {self.total}",
            f"  Processed:        {self.processed}",
            f"  Skipped:          {self.skipped}",
            f"  Failed:           {self.failed}",
            f"  Duration:         {duration(self.duration)}",
            f"  Average per clip: {self.average_ms:.2f} ms",
            f"  Last error:       {self.last_error or '-'}",
            f"  API requests:     {self.embedding.requests}",
            f"  Tokens:           {self.embedding.tokens}",
            f"  Cache hit rate:   {self.embedding.cache_hit_rate:.1%}",
            f"  Estimated cost:   ${self.estimated_cost_usd:.4f}",
            *self._skip_lines(),
        ]

    def _skip_lines(self) -> list[str]:
        """Why clips were left alone, where it is not obvious (the summary says each reason)."""
        out = []
        if self.superseded:
            out.append(f"  Edited meanwhile: {self.superseded} (the worker embeds the new text)")
        if self.index_rebuilt:
            out.append(f"  Index rebuilt:    {duration(self.index_seconds)} ({self.index_policy})")
        if self.paced_seconds:
            out.append(f"  Paced:            {duration(self.paced_seconds)} (--max-rate)")
        if self.in_open_batch:
            out.append(
                f"  In open batches:  {self.in_open_batch} (left to them: `clipembed batches list`)"
            )
        return out


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{int(hours)}h{int(minutes):02d}m{secs:04.1f}s"
        if hours
        else f"{int(minutes)}m{secs:04.1f}s"
    )


def exit_code(summary: Summary) -> int:
    if summary.failed or summary.interrupted:
        return 1
    return 0
