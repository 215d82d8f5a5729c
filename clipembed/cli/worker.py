"""``clipembed worker``: a long-running process; run as many as the load needs.

``--drain`` and ``--once`` exist for scripts and tests (exit 1 when an item was dead-lettered);
without them the worker runs until SIGTERM/SIGINT and then finishes the batch in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.realtime import worker as worker_mod

app = typer.Typer(add_completion=False)


@app.command("worker")
def worker(
    batch: int | None = typer.Option(
        None,
        "--batch",
        min=1,
        max=2048,
        help="Items per claim [env CLIPEMBED_WORKER_BATCH_SIZE].",
    ),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        max=64,
        help="Claims in flight [env CLIPEMBED_WORKER_CONCURRENCY].",
    ),
    drain: bool = typer.Option(
        False, "--drain", help="Exit when nothing is ready instead of waiting for more."
    ),
    once: bool = typer.Option(False, "--once", help="Claim and process one batch, then exit."),
    debug: bool = common.DebugOption,
) -> None:
    """Embed queued clips as they are inserted and edited; run as many as the load needs."""
    cfg = common.load_settings()

    async def main() -> int:
        stop = asyncio.Event()
        common.stop_on_signals(stop)
        async with runtime.open_runtime(cfg) as rt:
            w = worker_mod.Worker(rt, batch_size=batch, concurrency=concurrency)
            if once:
                await w.run_once()
                stats = w.stats
            else:
                stats = await (w.drain() if drain else w.run(stop))
        common.stdout.print(json.dumps(dataclasses.asdict(stats)))
        # --once/--drain are used from scripts: say when something went to the dead letters
        failed = (once or drain) and stats.dead_lettered > 0
        return common.EXIT_FAILED if failed else common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))
