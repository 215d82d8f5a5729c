"""``clipembed import FILE.jsonl[.gz]`` (clips) and ``import --vectors FILE --space NAME``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clipembed import runtime
from clipembed.bulk import bulk_import, importer, index_policy, progress
from clipembed.bulk import vector_import as vectors_mod
from clipembed.cli import common
from clipembed.db import connection
from clipembed.source import adoption

MAX_SHOWN = 50


app = typer.Typer(add_completion=False)


@app.command("import")
def import_(
    path: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, help="Clips: JSON Lines, optionally .gz"
    ),
    vectors: Path | None = typer.Option(
        None,
        "--vectors",
        exists=True,
        dir_okay=False,
        help="Vectors made elsewhere: JSON Lines (.jsonl[.gz]) or Parquet with clip_id or "
        "twitch_clip_id, and vector. No provider is called.",
    ),
    space: str | None = typer.Option(None, "--space", help="The space --vectors fills."),
    index: str = typer.Option(
        "auto",
        "--index",
        help="--vectors: auto (rebuild a candidate's index once), keep or rebuild.",
    ),
    as_json: bool = typer.Option(False, "--json", help="--vectors: the report as JSON."),
    path_choice: str = typer.Option(
        "auto",
        "--path",
        help="Clips: bulk (staging table, set-based; for large files), rows (row by row), "
        f"or auto (bulk from {bulk_import.AUTO_MIN_BYTES // 2**20} MiB on disk).",
    ),
    jobs: int = typer.Option(
        bulk_import.JOBS, "--jobs", min=1, max=16, help="Bulk path: chunks loaded at once."
    ),
    debug: bool = common.DebugOption,
) -> None:
    """Load clips (the clips column names), upserting by twitch_clip_id; bad rows are reported.

    With --vectors FILE --space NAME: fill an embedding space with vectors made elsewhere.
    """
    if (path is None) == (vectors is None):
        common.stderr.print("error: give a clips FILE, or --vectors FILE --space NAME")
        raise typer.Exit(common.EXIT_CONFIG)
    if vectors is not None and not space:
        common.stderr.print("error: --vectors needs --space NAME (see `clipembed model list`)")
        raise typer.Exit(common.EXIT_CONFIG)
    if path_choice not in ("auto", "bulk", "rows"):
        common.stderr.print("error: --path must be auto, bulk or rows")
        raise typer.Exit(common.EXIT_CONFIG)
    if index not in ("auto", "keep", "rebuild"):
        common.stderr.print("error: --index must be auto, keep or rebuild")
        raise typer.Exit(common.EXIT_CONFIG)
    cfg = common.load_settings()

    async def clips_main() -> int:
        assert path is not None
        conn = await connection.connect(connection.database_url(cfg))
        async with conn:
            adopted = await adoption.load(conn)
            await conn.commit()
            if bulk_import.wants_bulk(path_choice, path):
                with progress.ImportProgress(path, common.stderr) as bar:
                    report = await bulk_import.import_file(
                        conn,
                        path,
                        target=adopted,
                        jobs=jobs,
                        connect=lambda: connection.connect(connection.database_url(cfg)),
                        progress=bar.update,
                    )
            else:
                report = await importer.import_file(conn, path, target=adopted)
        for line, reason in report.bad[:MAX_SHOWN]:
            common.stderr.print(f"line {line}: {reason}", markup=False)
        if len(report.bad) > MAX_SHOWN:
            common.stderr.print(f"... and {len(report.bad) - MAX_SHOWN} more bad lines")
        common.stdout.print(
            f"loaded {report.loaded} clips, {len(report.bad)} bad lines ({report.mode} path)"
        )
        return common.EXIT_FAILED if report.bad else common.EXIT_OK

    async def vectors_main() -> int:
        assert vectors is not None and space is not None
        async with runtime.open_runtime(cfg, with_service=False, space=space) as rt:
            target = rt.require_space()
            report = await vectors_mod.import_vectors(
                rt.pool,
                vectors,
                space=target,
                model=target.model_for(cfg),
                index=index,
                build=index_policy.index_build(cfg),
            )
        if as_json:
            print(json.dumps(report.as_dict(), ensure_ascii=False))
        else:
            for line, reason in report.bad[:MAX_SHOWN]:
                common.stderr.print(f"line {line}: {reason}", markup=False)
            if report.bad_count > MAX_SHOWN:
                common.stderr.print(f"... and {report.bad_count - MAX_SHOWN} more bad lines")
            common.stdout.print(
                f"imported {report.imported} vectors into {report.space!r}, "
                f"{report.bad_count} bad lines"
                + (f", {report.superseded} clips edited meanwhile" if report.superseded else ""),
                markup=False,
            )
        return common.EXIT_FAILED if report.bad_count else common.EXIT_OK

    raise typer.Exit(common.run(vectors_main if vectors is not None else clips_main, debug=debug))
