"""``clipembed import FILE.jsonl[.gz]``."""

from __future__ import annotations

from pathlib import Path

import typer

from clipembed.cli import common
from clipembed.db import connection
from clipembed.jobs import importer


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        path: Path = typer.Argument(
            ..., exists=True, dir_okay=False, help="JSON Lines, optionally .gz"
        ),
        debug: bool = common.DebugOption,
    ) -> None:
        """Load clips (the clips column names), upserting by twitch_clip_id; bad rows are reported."""
        cfg = common.load_settings()

        async def main() -> int:
            conn = await connection.connect(connection.database_url(cfg))
            async with conn:
                report = await importer.import_file(conn, path)
            for line, reason in report.bad[:50]:
                common.stderr.print(f"line {line}: {reason}")
            if len(report.bad) > 50:
                common.stderr.print(f"... and {len(report.bad) - 50} more bad lines")
            common.stdout.print(f"loaded {report.loaded} clips, {len(report.bad)} bad lines")
            return common.EXIT_FAILED if report.bad else common.EXIT_OK

        raise typer.Exit(common.run(main, debug=debug))
