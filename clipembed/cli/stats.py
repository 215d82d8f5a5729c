"""``clipembed stats [--json]``."""

from __future__ import annotations

import json

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.jobs import stats as stats_mod


def register(app: typer.Typer) -> None:
    @app.command("stats")
    def stats(
        as_json: bool = typer.Option(False, "--json", help="One JSON object."),
        debug: bool = common.DebugOption,
    ) -> None:
        """Coverage, recent and stale embeddings, counts by model, and the queue."""
        cfg = common.load_settings()

        async def main() -> None:
            async with runtime.open_runtime(cfg, with_service=False) as rt:
                data = await stats_mod.collect(rt.pool, model=cfg.model, dimensions=rt.dimensions)
            if as_json:
                print(json.dumps(data))
            else:
                for line in stats_mod.lines(data):
                    common.stdout.print(line)

        common.run(main, debug=debug)
