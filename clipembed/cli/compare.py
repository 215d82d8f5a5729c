"""``clipembed model compare NAME``: the candidate against the active space, before a promote.

An evaluation command (it may load a BEIR benchmark through ``clipembed.eval``), listed on the
``model`` group of :mod:`clipembed.cli.model` and imported only when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from clipembed import runtime, spaces
from clipembed.cli import common
from clipembed.search import compare as compare_mod

app = typer.Typer(add_completion=False)


@app.command("compare")
def compare(
    name: str = typer.Argument(..., help="The candidate space."),
    queries: Path | None = typer.Option(
        None, "--queries", exists=True, dir_okay=False, help="One query per line."
    ),
    beir_dir: Path | None = typer.Option(
        None, "--beir", exists=True, file_okay=False, help="A BEIR dataset: nDCG@10 of both."
    ),
    limit: int = typer.Option(200, "--limit", min=1, max=10_000, help="Queries at most."),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """Overlap of semantic top-10 results on recent queries; nDCG@10 on a BEIR directory."""
    cfg = common.load_settings()
    given = None
    if queries is not None:
        lines = queries.read_text("utf-8", errors="replace").splitlines()
        given = [line.strip() for line in lines if line.strip()]

    async def main() -> dict[str, Any]:
        async with runtime.open_runtime(cfg) as rt:
            async with rt.pool.connection() as conn:
                active = await spaces.active(conn)
                candidate = await spaces.by_name(conn, name)
                await conn.commit()
            if candidate.id == active.id:
                raise spaces.SpaceError(f"{name!r} is the active space: name a candidate")
            report: dict[str, Any] = {"active": active.name, "candidate": candidate.name}
            ov = await compare_mod.overlap(rt, active, candidate, given=given, limit=limit)
            report["overlap@10"] = ov.as_dict()
            if beir_dir is not None:
                from clipembed.eval import spaces as eval_spaces

                report["beir"] = {
                    "dataset": beir_dir.name,
                    active.name: await eval_spaces.beir_scores(rt, active, beir_dir),
                    candidate.name: await eval_spaces.beir_scores(rt, candidate, beir_dir),
                }
            return report

    report = common.run(main, debug=debug)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    ov = report["overlap@10"]
    common.stdout.print(
        f"{report['candidate']} vs {report['active']} on {ov['queries']} {ov['source']}: "
        f"top-10 overlap mean {ov['mean']:.3f}, median {ov['median']:.3f}, min {ov['minimum']:.3f}",
        markup=False,
    )
    if "beir" in report:
        for space_name in (report["active"], report["candidate"]):
            scores = report["beir"][space_name]
            common.stdout.print(
                f"{report['beir']['dataset']} nDCG@10 {space_name}: semantic "
                f"{scores['semantic']:.4f}, hybrid {scores['hybrid']:.4f}",
                markup=False,
            )
