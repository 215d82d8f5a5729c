"""``clipembed stats [--json]``."""

from __future__ import annotations

import json

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.status import stats as stats_mod

app = typer.Typer(add_completion=False)


@app.command("stats")
def stats(
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
    debug: bool = common.DebugOption,
) -> None:
    """Coverage, recent and stale embeddings, counts by model, the queue, the replica's lag."""
    cfg = common.load_settings()

    async def main() -> None:
        async with runtime.open_runtime(cfg, with_service=False) as rt:
            space = rt.require_space()
            data = await stats_mod.collect(
                rt.pool,
                model=space.model_for(cfg),
                dimensions=space.dimensions,
                space=space,
            )
        replica = cfg.search_database_url
        if replica is not None and replica.get_secret_value().strip():
            url = replica.get_secret_value().strip()
            data["replica_lag_seconds"] = await stats_mod.replica_lag(url)
        if as_json:
            print(json.dumps(data))
        else:
            for line in stats_mod.lines(data):
                common.stdout.print(line)

    common.run(main, debug=debug)
