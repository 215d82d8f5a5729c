"""``clipembed migrate up|down|status``."""

from __future__ import annotations

import typer

from clipembed import runtime, source
from clipembed.cli import common
from clipembed.db import connection, migrations
from clipembed.source import adoption

app = typer.Typer(
    help="Create, roll back or inspect the database schema.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("up")
def up(debug: bool = common.DebugOption) -> None:
    """Apply every pending migration (safe to run from several processes at once)."""
    cfg = common.load_settings()

    async def main() -> None:
        dims = await runtime.resolve_dimensions(cfg)
        mapping = source.mapping_from_settings(cfg)
        conn = await connection.connect(connection.database_url(cfg), autocommit=True)
        async with conn:
            applied = await migrations.up(conn, dimensions=dims, mapping=mapping)
            adopted = await adoption.load(conn)
        if adopted is not None:
            hidden = ", ".join(adopted.hidden) or "no flag"
            common.stdout.print(
                f"adopted {adopted.mapping.qualified} (hidden when: {hidden}); "
                f"clipembed's own objects are in the schema {source.SCHEMA!r}"
            )
        if applied:
            for m in applied:
                common.stdout.print(f"applied {m.version:04d}_{m.name}")
        else:
            common.stdout.print("schema is up to date")

    common.run(main, debug=debug)


@app.command("down")
def down(
    to: int | None = typer.Option(
        None, "--to", help="Roll back to this version (0: everything clipembed added)."
    ),
    drop_clips: bool = typer.Option(
        False,
        "--drop-clips",
        help="With --to 0 on a clips table clipembed created: drop it and every clip.",
    ),
    debug: bool = common.DebugOption,
) -> None:
    """Roll back the newest migration, or every migration after --to.

    On an adopted clips table (one that existed before clipembed), --to 0 removes exactly
    what clipembed added and keeps the table and its clips.
    """
    cfg = common.load_settings()

    async def main() -> None:
        conn = await connection.connect(connection.database_url(cfg), autocommit=True)
        async with conn:
            undone = await migrations.down(conn, to=to, drop_clips=drop_clips)
        for m in undone:
            common.stdout.print(f"rolled back {m.version:04d}_{m.name}")
        if not undone:
            common.stdout.print("nothing to roll back")

    common.run(main, debug=debug)


@app.command("status")
def status(debug: bool = common.DebugOption) -> None:
    """List migrations and whether each is applied."""
    cfg = common.load_settings()

    async def main() -> None:
        conn = await connection.connect(connection.database_url(cfg), autocommit=True)
        async with conn:
            rows = await migrations.status(conn)
        for s in rows:
            mark = "applied" if s.applied else "pending"
            extra = f" {s.applied_at:%Y-%m-%d %H:%M:%S} {s.params}" if s.applied else ""
            common.stdout.print(f"{s.version:04d}_{s.name}: {mark}{extra}")

    common.run(main, debug=debug)
