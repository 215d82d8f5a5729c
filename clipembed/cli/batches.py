"""``clipembed batches list|show ID|cancel ID [--json]``: the Batch API backfill's batches."""

from __future__ import annotations

import json
from typing import Any

import typer

from clipembed import runtime
from clipembed.batches.runner import BatchBackfill
from clipembed.cli import common
from clipembed.store import batch_tables

COLUMNS = (
    "id", "state", "provider_batch_id", "clips", "requests", "tokens", "cost_usd",
    "sync_cost_usd", "request_counts", "applied", "failed", "superseded", "released", "created_at",
    "submitted_at", "expires_at", "finished_at", "applied_at", "last_error",
)  # fmt: skip


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, r, strict=True))
    for k, v in out.items():
        if hasattr(v, "isoformat"):
            out[k] = v.isoformat()
    out["saving_usd"] = round(out["sync_cost_usd"] - out["cost_usd"], 6)
    return out


app = typer.Typer(
    help="Batch API backfills (backfill --via batch).", no_args_is_help=True, add_completion=False
)


@app.command("list")
def list_(
    limit: int = typer.Option(50, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """Newest first: state, clips, tokens, cost and the saving against the sync price."""
    cfg = common.load_settings()

    async def main() -> None:
        async with (
            runtime.open_runtime(cfg, with_service=False) as rt,
            rt.pool.connection() as conn,
        ):
            rows = await (await conn.execute(batch_tables.LIST, (limit,))).fetchall()
        data = [_row(r) for r in rows]
        if as_json:
            print(json.dumps(data))
            return
        if not data:
            common.stdout.print("no batches")
        for b in data:
            common.stdout.print(
                f"{b['id']:>5}  {b['state']:<11} {b['clips']:>7} clips  {b['tokens']:>10} tok"
                f"  ${b['cost_usd']:.4f} (saved ${b['saving_usd']:.4f})"
                f"  {b['provider_batch_id'] or '-'}",
                markup=False,
            )

    common.run(main, debug=debug)


@app.command("show")
def show(
    batch_id: int = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """Everything recorded about one batch."""
    cfg = common.load_settings()

    async def main() -> int:
        async with (
            runtime.open_runtime(cfg, with_service=False) as rt,
            rt.pool.connection() as conn,
        ):
            row = await (await conn.execute(batch_tables.ONE, (batch_id,))).fetchone()
        if row is None:
            common.stderr.print(f"error: no batch {batch_id}")
            return common.EXIT_CONFIG
        data = _row(row)
        if as_json:
            print(json.dumps(data))
        else:
            for k, v in data.items():
                common.stdout.print(f"{k:>18}: {v}", markup=False)
        return common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))


@app.command("cancel")
def cancel(batch_id: int = typer.Argument(...), debug: bool = common.DebugOption) -> None:
    """Cancel a batch at the provider; finished lines are kept, the rest re-planned."""
    cfg = common.load_settings()

    async def main() -> int:
        async with runtime.open_runtime(cfg) as rt:
            outcome = await BatchBackfill(rt).cancel(batch_id)
        common.stdout.print(f"batch {batch_id}: {outcome}", markup=False)
        return common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))
