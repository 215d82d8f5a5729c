"""``clipembed backfill``: the original's flags (--batch, --force, --dry-run) and more."""

from __future__ import annotations

import asyncio
import json

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.jobs import backfill as backfill_mod
from clipembed.jobs import progress as progress_mod


def register(app: typer.Typer) -> None:
    @app.command("backfill")
    def backfill(
        batch: int = typer.Option(
            50, "--batch", "-batch", min=1, max=2048, help="Clips per batch."
        ),
        force: bool = typer.Option(False, "--force", "-force", help="Re-embed every clip."),
        dry_run: bool = typer.Option(
            False, "--dry-run", "-dry-run", help="Send nothing, write nothing: estimate."
        ),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="Embed at most this many clips."
        ),
        concurrency: int = typer.Option(
            4, "--concurrency", min=1, max=64, help="Batches in flight."
        ),
        index: str = typer.Option(
            "auto", "--index", help="HNSW index during loading: auto, keep or rebuild."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
        debug: bool = common.DebugOption,
    ) -> None:
        """Embed every live clip whose embedding is missing or stale. Resumable; Ctrl-C stops cleanly."""
        if index not in ("auto", "keep", "rebuild"):
            common.stderr.print("error: --index must be auto, keep or rebuild")
            raise typer.Exit(common.EXIT_CONFIG)
        cfg = common.load_settings()

        async def main() -> int:
            stop = asyncio.Event()
            common.stop_on_signals(stop)
            progress = (
                None
                if as_json
                else progress_mod.Progress("backfill", terminal=common.is_terminal())
            )
            async with runtime.open_runtime(cfg) as rt:
                summary = await backfill_mod.run(
                    rt,
                    batch_size=batch,
                    force=force,
                    dry_run=dry_run,
                    limit=limit,
                    concurrency=concurrency,
                    index=index,
                    stop=stop,
                    progress=progress,
                )
            if as_json:
                print(json.dumps(summary.as_dict()))
            else:
                for line in summary.lines():
                    common.stdout.print(line)
            return backfill_mod.exit_code(summary)

        raise typer.Exit(common.run(main, debug=debug))
