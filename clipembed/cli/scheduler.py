"""``clipembed scheduler [--once]``."""

from __future__ import annotations

import asyncio
import json

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.realtime import scheduler as scheduler_mod

app = typer.Typer(add_completion=False)


@app.command("scheduler")
def scheduler(
    once: bool = typer.Option(False, "--once", help="Run one cycle and exit."),
    debug: bool = common.DebugOption,
) -> None:
    """Embed recent clips without an embedding, at start and every interval; SIGTERM exits 0."""
    cfg = common.load_settings()

    async def main() -> int:
        stop = asyncio.Event()
        common.stop_on_signals(stop)
        async with runtime.open_runtime(cfg) as rt:
            results = await scheduler_mod.run_scheduler(rt, stop, once=once)
        summary = scheduler_mod.describe(results)
        common.stdout.print(json.dumps(summary))
        return common.EXIT_FAILED if once and summary["failed"] else common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))
