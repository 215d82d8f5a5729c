"""``clipembed failed list|retry``: inspect and replay dead-lettered clips."""

from __future__ import annotations

import json
import uuid

import typer

from clipembed.cli import common
from clipembed.db import connection
from clipembed.realtime import queue

app = typer.Typer(
    help="Clips that exhausted their embedding attempts.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("list")
def list_(
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """Dead letters, newest first, with their last error."""
    cfg = common.load_settings()

    async def main() -> None:
        conn = await connection.connect(connection.database_url(cfg))
        async with conn:
            rows = await queue.dead_letters(conn, limit=limit)
        if as_json:
            print(json.dumps(rows, default=str))
            return
        if not rows:
            common.stdout.print("no failed clips")
        for r in rows:
            common.stdout.print(
                f"{r['clip_id']}  attempts={r['attempts']}  {r['failed_at']:%Y-%m-%d %H:%M:%S}  "
                f"{r['title']!r}: {r['last_error']}"
            )

    common.run(main, debug=debug)


@app.command("retry")
def retry(
    ids: list[str] = typer.Argument(None, help="Clip ids to replay."),
    all_: bool = typer.Option(False, "--all", help="Replay every dead letter."),
    debug: bool = common.DebugOption,
) -> None:
    """Put dead-lettered clips back on the queue with fresh attempts."""
    if not all_ and not ids:
        common.stderr.print("error: give clip ids, or --all")
        raise typer.Exit(common.EXIT_CONFIG)
    try:
        parsed = None if all_ else [uuid.UUID(i) for i in ids]
    except ValueError:
        common.stderr.print("error: clip ids must be UUIDs")
        raise typer.Exit(common.EXIT_CONFIG) from None
    cfg = common.load_settings()

    async def main() -> None:
        conn = await connection.connect(connection.database_url(cfg))
        async with conn:
            moved = await queue.replay(conn, parsed)
        common.stdout.print(f"replayed {moved} clips")

    common.run(main, debug=debug)
