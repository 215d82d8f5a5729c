"""``clipembed model list|add|backfill|promote|rollback|drop|sync``: embedding spaces.

``compare`` lives in :mod:`clipembed.cli.compare` (an evaluation command: it may run a BEIR
benchmark), imported only when it runs. The operations themselves live in :mod:`clipembed.spaces`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import typer

from clipembed import runtime, spaces
from clipembed.bulk import adaptive_pace, index_policy, pacing
from clipembed.bulk import backfill as backfill_mod
from clipembed.cli import backfill as backfill_cli
from clipembed.cli import common, lazy
from clipembed.settings import Settings
from clipembed.spaces import mirror, registry

COMPARE = "Overlap of semantic top-10 results on recent queries; nDCG@10 on a BEIR directory."

app = typer.Typer(
    cls=lazy.group({"compare": ("clipembed.cli.compare:app", COMPARE)}),
    help="Embedding spaces: add a model, fill it, compare, promote, roll back, drop.",
    no_args_is_help=True,
    add_completion=False,
)


@contextlib.asynccontextmanager
async def _admin(
    cfg: Settings, *, bulk: bool = False
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An autocommit connection of a runtime without an embedding service (``bulk``: this
    process and the session at CLIPEMBED_BULK_NICE, clipembed.db.priority)."""
    opened = backfill_cli.bulk_runtime if bulk else runtime.open_runtime
    async with opened(cfg, with_service=False) as rt, rt.pool.connection() as conn:
        await conn.set_autocommit(True)
        yield conn


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


async def listing(cfg: Settings) -> list[dict[str, Any]]:
    """Every space with its state, coverage and sizes (exact counts)."""
    async with runtime.open_runtime(cfg, with_service=False) as rt, rt.pool.connection() as conn:
        out = []
        for s in await spaces.all_spaces(conn):
            cov = await registry.coverage(conn, s)
            out.append(
                {
                    **s.describe(cfg if s.configured else None),
                    "state": s.state,
                    "configured": s.configured,
                    "table": s.table_name,
                    "live_clips": cov.live,
                    "embedded": cov.embedded,
                    "missing": cov.missing,
                    "coverage": round(cov.fraction, 6),
                    "table_bytes": cov.table_bytes,
                    "index_bytes": cov.index_bytes,
                    "last_generated_at": cov.last_generated.isoformat()
                    if cov.last_generated
                    else None,
                    "created_at": s.created_at.isoformat() if s.created_at else None,
                    "promoted_at": s.promoted_at.isoformat() if s.promoted_at else None,
                }
            )
        return out


def _sync(cfg: Settings) -> None:
    async def main() -> None:
        async with backfill_cli.bulk_runtime(cfg, with_service=False) as rt:
            # the sync rewrites every clip row: bulk work, paced like a backfill (--max-rate's
            # setting, and the adaptive pace that follows search)
            pacer = pacing.Pacer(cfg.clipembed_backfill_max_rate, burst=mirror.PAGE)
            target = cfg.clipembed_backfill_search_target_ms
            async with adaptive_pace.watching(
                rt.pool, pacer, target_ms=target, by="mirror sync"
            ) as pace:
                report = await mirror.sync(rt.pool, before_page=pace.take)
        what = "copied into" if report.fits else "cleared from (dimensions differ)"
        common.stdout.print(
            f"clips.embedding: {report.changed} rows {what} the mirror of {report.space!r} "
            f"in {report.seconds:.1f} s"
        )

    common.run(main)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json"), debug: bool = common.DebugOption) -> None:
    """Every space: state, model, storage, coverage, table and index size."""
    cfg = common.load_settings()
    data = common.run(lambda: listing(cfg), debug=debug)
    if as_json:
        print(json.dumps(data))
        return
    for s in data:
        common.stdout.print(
            f"{s['name']:<16} {s['state']:<9} {s['provider']}/{s['model']} "
            f"{s['dimensions']}d {s['storage']:<7} {s['embedded']:>9}/{s['live_clips']} "
            f"({s['coverage'] * 100:.1f} %)  table {_mib(s['table_bytes'])}, "
            f"index {_mib(s['index_bytes'])}",
            markup=False,
        )


@app.command("add")
def add(
    name: str = typer.Argument(..., help="A short name: lower-case letters, digits, - and _."),
    provider: str = typer.Option(..., "--provider", help="openai or local."),
    model: str = typer.Option(..., "--model", help="The provider's model name (or path)."),
    dimensions: int = typer.Option(..., "--dimensions", min=1, max=16000),
    storage: str = typer.Option(
        registry.DEFAULT_STORAGE, "--storage", help="halfvec (half the size) or vector."
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Embed one text first: the model answers, and in the dimensions given.",
    ),
    debug: bool = common.DebugOption,
) -> None:
    """Add a candidate space. Workers embed new and edited clips into it from now on."""
    cfg = common.load_settings()
    try:
        registry.check_new(
            name, provider=provider, model=model, dimensions=dimensions, storage=storage
        )
    except spaces.SpaceError as exc:
        common.stderr.print(f"error: {exc}", markup=False)
        raise typer.Exit(common.EXIT_CONFIG) from None

    async def main() -> int:
        async with runtime.open_runtime(cfg, with_service=False) as rt:
            if check:
                probe = registry.Space(
                    0, name, provider, model, dimensions, storage, 1, "", None, None
                )
                svc = await rt.service_for(probe)  # raises on a dimension mismatch
                result = await svc.embed_detailed(["clipembed: checking the model"])
                if result.errors[0] is not None:
                    common.stderr.print(
                        f"error: the model did not answer: {result.errors[0]}", markup=False
                    )
                    return common.EXIT_FAILED
            async with rt.pool.connection() as conn:
                await conn.set_autocommit(True)
                space = await registry.add(
                    conn,
                    name,
                    provider=provider,
                    model=model,
                    dimensions=dimensions,
                    storage=storage,
                    build=index_policy.index_build(cfg),
                )
        common.stdout.print(
            f"added space {space.name!r}: {provider}/{model}, {dimensions} dimensions, "
            f"{storage} (table {space.table_name}). Fill it with "
            f"`clipembed model backfill {space.name}`.",
            markup=False,
        )
        return common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))


@app.command("backfill")
def backfill(
    name: str = typer.Argument(...),
    via: str = typer.Option("sync", "--via", help="sync, batch or auto (see backfill)."),
    limit: int | None = typer.Option(None, "--limit", min=1),
    index: str = typer.Option("auto", "--index", help="auto, keep or rebuild."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate cost and time only."),
    batch: int | None = typer.Option(None, "--batch", min=1, max=2048, help="Clips per batch."),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        max=64,
        help="Batches in flight (lower it to leave CPU and connections to live search).",
    ),
    max_rate: float | None = typer.Option(
        None,
        "--max-rate",
        min=0,
        help="Clips per second at most (0: no cap). [default: CLIPEMBED_BACKFILL_MAX_RATE]",
    ),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """Embed every live clip the space lacks (resumable, with progress and cost)."""
    cfg = backfill_mod.effective_settings(
        common.load_settings(), batch_size=batch, concurrency=concurrency
    )
    if max_rate is not None:
        cfg = cfg.model_copy(update={"clipembed_backfill_max_rate": max_rate})
    code = common.run(
        lambda: backfill_cli.execute(
            cfg,
            space=name,
            via=via,
            limit=limit,
            index=index,
            dry_run=dry_run,
            as_json=as_json,
        ),
        debug=debug,
    )
    raise typer.Exit(code)


@app.command("promote")
def promote(
    name: str = typer.Argument(...),
    force: bool = typer.Option(
        False,
        "--force",
        help="Promote even if it lacks vectors the active space has (and none is queued).",
    ),
    sync: bool = typer.Option(
        True, "--sync/--no-sync", help="Then copy it into the clips columns (the mirror)."
    ),
    debug: bool = common.DebugOption,
) -> None:
    """Make a space the active one, atomically; the active one is kept for rollback."""
    cfg = common.load_settings()

    async def main() -> int:
        # the check reads both spaces whole (5.6 s at 100,000 clips, when search failed in the
        # migration benchmark): bulk work's priority; the switch itself is one short update
        async with _admin(cfg, bulk=True) as conn:
            target = await spaces.by_name(conn, name)
            lacking = await registry.behind(conn, target, await spaces.active(conn))
            if lacking and not force:
                common.stderr.print(
                    f"error: {lacking} live clips have a vector in the active space but none "
                    f"in {name!r} (and none is queued): run `clipembed model backfill "
                    f"{name}` (or promote with --force)",
                    markup=False,
                )
                return common.EXIT_FAILED
            t = time.perf_counter()
            old, new = await registry.promote(conn, name)
            ms = (time.perf_counter() - t) * 1000
        common.stdout.print(
            f"promoted {new.name!r} in {ms:.0f} ms; {old.name!r} is kept current for "
            f"`clipembed model rollback`",
            markup=False,
        )
        return common.EXIT_OK

    code = common.run(main, debug=debug)
    if code == common.EXIT_OK and sync:
        _sync(cfg)
    raise typer.Exit(code)


@app.command("rollback")
def rollback(
    sync: bool = typer.Option(True, "--sync/--no-sync", help="Then re-sync the mirror."),
    debug: bool = common.DebugOption,
) -> None:
    """Back to the previous space (kept current since the promote)."""
    cfg = common.load_settings()

    async def main() -> None:
        async with _admin(cfg) as conn:
            t = time.perf_counter()
            old, new = await registry.rollback(conn)
            ms = (time.perf_counter() - t) * 1000
        common.stdout.print(
            f"rolled back to {new.name!r} in {ms:.0f} ms ({old.name!r} is the previous one)",
            markup=False,
        )

    common.run(main, debug=debug)
    if sync:
        _sync(cfg)


@app.command("drop")
def drop(
    name: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    debug: bool = common.DebugOption,
) -> None:
    """Drop a space that is not active: its vectors, table and index."""
    if not yes and not typer.confirm(f"drop space {name!r} and all its vectors?"):
        raise typer.Exit(common.EXIT_FAILED)
    cfg = common.load_settings()

    async def main() -> None:
        async with _admin(cfg) as conn:
            await registry.drop(conn, name)
        common.stdout.print(f"dropped space {name!r}", markup=False)

    common.run(main, debug=debug)


@app.command("sync")
def sync_(debug: bool = common.DebugOption) -> None:
    """Copy the active space into clips.embedding (after an interrupted promote/rollback)."""
    _sync(common.load_settings())
