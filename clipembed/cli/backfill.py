"""``clipembed backfill``: the original's flags (--batch, --force, --dry-run) and more."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import typer

from clipembed import runtime
from clipembed.batches.runner import BatchBackfill
from clipembed.bulk import backfill as backfill_mod
from clipembed.bulk import index_policy
from clipembed.bulk import progress as progress_mod
from clipembed.cli import common
from clipembed.db import priority
from clipembed.settings import Settings

app = typer.Typer(add_completion=False)


@app.command("backfill")
def backfill(
    batch: int | None = typer.Option(
        None,
        "--batch",
        "-batch",
        min=1,
        max=2048,
        help="Clips per batch (and per request). [default: CLIPEMBED_BACKFILL_BATCH_SIZE, 50]",
    ),
    force: bool = typer.Option(False, "--force", "-force", help="Re-embed every clip."),
    dry_run: bool = typer.Option(
        False, "--dry-run", "-dry-run", help="Send nothing, write nothing: estimate."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Embed at most this many clips."),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        max=64,
        help="Batches in flight. [default: CLIPEMBED_BACKFILL_CONCURRENCY, 4]",
    ),
    index: str = typer.Option(
        "auto", "--index", help="HNSW index during loading: auto, keep or rebuild."
    ),
    via: str = typer.Option(
        "sync",
        "--via",
        help="sync (the embeddings endpoint), batch (the Batch API: half price, within 24 h)"
        " or auto (batch above EMBEDDING_BATCH_API_MIN_CLIPS clips to embed).",
    ),
    wait: bool = typer.Option(
        True,
        "--wait/--no-wait",
        help="--via batch: stay until every batch is applied, or submit and exit"
        " (a later run resumes).",
    ),
    space: str | None = typer.Option(
        None, "--space", help="The embedding space to fill (default: the active one)."
    ),
    max_rate: float | None = typer.Option(
        None,
        "--max-rate",
        min=0,
        help="Clips per second at most (0: no cap), to leave a machine that also serves"
        " search room. [default: CLIPEMBED_BACKFILL_MAX_RATE, 0]",
    ),
    sync_fallback: bool = typer.Option(
        True,
        "--sync-fallback/--no-sync-fallback",
        help="--via batch: embed texts that failed in two batches synchronously at the end"
        " (at the sync price), or dead-letter them with their reason.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    debug: bool = common.DebugOption,
) -> None:
    """Embed every live clip whose embedding is missing or stale. Resumable; Ctrl-C stops cleanly."""
    if via not in ("sync", "batch", "auto"):
        common.stderr.print("error: --via must be sync, batch or auto")
        raise typer.Exit(common.EXIT_CONFIG)
    if index not in index_policy.INDEX_MODES:
        common.stderr.print("error: --index must be auto, keep or rebuild")
        raise typer.Exit(common.EXIT_CONFIG)
    cfg = backfill_mod.effective_settings(
        common.load_settings(), batch_size=batch, concurrency=concurrency
    )
    if max_rate is not None:
        cfg = cfg.model_copy(update={"clipembed_backfill_max_rate": max_rate})

    async def main() -> int:
        return await execute(
            cfg,
            space=space,
            force=force,
            dry_run=dry_run,
            limit=limit,
            index=index,
            via=via,
            wait=wait,
            as_json=as_json,
            sync_fallback=sync_fallback,
        )

    raise typer.Exit(common.run(main, debug=debug))


def bulk_runtime(
    cfg: Settings, **kwargs: Any
) -> contextlib.AbstractAsyncContextManager[runtime.Runtime]:
    """``runtime.open_runtime(cfg, bulk=True, ...)`` after lowering this process's priority:
    bulk work's process and sessions leave the cores to search (clipembed.db.priority)."""
    priority.lower_own_priority(cfg.clipembed_bulk_nice)
    return runtime.open_runtime(cfg, bulk=True, **kwargs)


async def execute(
    cfg: Settings,
    *,
    space: str | None,
    force: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
    index: str = "auto",
    via: str = "sync",
    wait: bool = True,
    as_json: bool = False,
    sync_fallback: bool = True,
) -> int:
    """One backfill of a space (``clipembed backfill`` and ``clipembed model backfill``)."""
    stop = asyncio.Event()
    common.stop_on_signals(stop)
    progress = None if as_json else progress_mod.Progress("backfill", terminal=common.is_terminal())
    async with bulk_runtime(cfg, space=space) as rt:
        chosen = await backfill_mod.choose_via(rt, via, force=force)
        if chosen == "batch" and not dry_run:
            batch_summary = await BatchBackfill(rt, sync_fallback=sync_fallback).run(
                limit=limit, wait=wait, stop=stop
            )
            restored = await backfill_mod.restore_mirror(rt)
            if restored and not as_json:
                common.stdout.print(_restored_line(restored, dry_run=False))
            if as_json:
                print(json.dumps(batch_summary.as_dict()))
            else:
                for line in batch_summary.lines():
                    common.stdout.print(line)
            return common.EXIT_FAILED if batch_summary.interrupted else common.EXIT_OK
        summary = await backfill_mod.run(
            rt,
            force=force,
            dry_run=dry_run,
            limit=limit,
            index=index,
            stop=stop,
            progress=progress,
        )
        if dry_run and chosen == "batch":
            summary.batch_cost_usd = (
                summary.embedding.tokens
                * rt.require_service().settings.batch_price_per_million_tokens
                / 1e6
            )
        if not summary.interrupted:
            summary.mirror_restored = await backfill_mod.restore_mirror(rt, dry_run=dry_run)
    if as_json:
        print(json.dumps(summary.as_dict()))
    else:
        for line in summary.lines():
            common.stdout.print(line)
        if summary.mirror_restored:
            common.stdout.print(_restored_line(summary.mirror_restored, dry_run=dry_run))
    return backfill_mod.exit_code(summary)


def _restored_line(n: int, *, dry_run: bool) -> str:
    verb = "would restore" if dry_run else "restored"
    return (
        f"  Adopted table:    {verb} {n} vectors in its embedding column from clipembed's own "
        "(no provider call)"
    )
