"""``clipembed status [--json] [--watch]``: the console's figures in the terminal."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from clipembed import runtime
from clipembed.cli import common
from clipembed.status import model as status_model


def tables(s: dict[str, Any]) -> Group:
    """The status as rich tables (pure: a dict in, renderables out)."""
    cov, back = s["coverage"], s["backlog"]
    head = Table(title=f"clipembed · {s['model']} ({s['dimensions']} dims)", show_header=False)
    head.add_column("figure")
    head.add_column("value", justify="right")
    rows = [
        ("Coverage", f"{cov['ratio'] * 100:.2f} %  ({cov['embedded']:,} of {cov['live']:,})"),
        (
            "Missing / stale / removed",
            f"{cov['missing']:,} / {cov['stale']:,} / {cov['removed']:,}",
        ),
        (
            "Queue: pending / leased / retrying / dead",
            f"{back['pending']:,} / {back['leased']:,} / {back['retrying']:,} / {back['dead']:,}",
        ),
        ("Oldest pending", f"{back['oldest_pending_seconds']:.0f} s"),
        (
            "Tokens today / 30 d",
            f"{s['spend']['today']['tokens']:,} / {s['spend']['30d']['tokens']:,}",
        ),
        (
            "Cost today / 30 d",
            f"${s['spend']['today']['usd']:.4f} / ${s['spend']['30d']['usd']:.4f}",
        ),
        (
            "Index",
            f"{s['index']['size_bytes'] / 1048576:.1f} MiB" if s["index"]["exists"] else "missing",
        ),
    ]
    adopted = s.get("adopted")
    if adopted:
        rows.append(
            (
                f"{adopted['table']}: foreign / missing vectors",
                f"{adopted['foreign_vectors']:,} / {adopted['mirror_missing']:,}",
            )
        )
    for name, value in rows:
        head.add_row(name, value)
    rates = Table(title="Throughput")
    for col in ("window", "clips/min", "tokens/min", "errors", "429s"):
        rates.add_column(col, justify="right")
    for window, t in s["throughput"].items():
        rates.add_row(
            window,
            f"{t['clips_per_minute']:,.1f}",
            f"{t['tokens_per_minute']:,.0f}",
            f"{t['error_rate'] * 100:.1f} %",
            str(t["rate_limited"]),
        )
    workers = Table(title="Workers")
    for col in ("state", "name", "heartbeat", "in flight", "embedded"):
        workers.add_column(col)
    for w in s["workers"]:
        workers.add_row(
            w["state"],
            w["name"],
            f"{w['silent_seconds']:.0f} s ago",
            str(w["in_flight"]),
            f"{w['embedded']:,}",
        )
    parts: list[Any] = [head, rates]
    if s["workers"]:
        parts.append(workers)
    if s["last_errors"]:
        errs = Table(title="Last errors")
        for col in ("state", "clip", "attempts", "reason"):
            errs.add_column(col)
        for e in s["last_errors"][:5]:
            errs.add_row(e["state"], e["title"][:40], str(e["attempts"]), e["reason"][:80])
        parts.append(errs)
    return Group(*parts)


app = typer.Typer(add_completion=False)


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON object (the /status body)."),
    watch: bool = typer.Option(False, "--watch", help="Refresh every --interval seconds."),
    interval: float = typer.Option(2.0, "--interval", min=0.5, help="Seconds between refreshes."),
    debug: bool = common.DebugOption,
) -> None:
    """Coverage, backlog, throughput, errors, spend, workers and index: the console's figures."""
    cfg = common.load_settings()

    async def main() -> None:
        async with runtime.open_runtime(cfg, with_service=False) as rt:

            async def collect() -> dict[str, Any]:
                return await status_model.collect(
                    rt.pool, cfg, dimensions=rt.dimensions, history=False
                )

            if as_json and not watch:
                print(json.dumps(await collect()))
                return
            if not watch:
                common.stdout.print(tables(await collect()))
                return
            with Live(tables(await collect()), console=common.stdout, auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(tables(await collect()), refresh=True)

    common.run(main, debug=debug)
