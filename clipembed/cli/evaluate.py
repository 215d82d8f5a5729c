"""``clipembed eval beir DIR``: search quality on a public benchmark, with the product's code."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.search import beir, bm25, core


def register(app: typer.Typer) -> None:
    evaluate = typer.Typer(help="Measure search quality.", no_args_is_help=True)
    app.add_typer(evaluate, name="eval")

    @evaluate.command("beir")
    def beir_command(
        directory: Path = typer.Argument(
            ..., exists=True, file_okay=False, help="A BEIR dataset directory."
        ),
        mode: list[str] = typer.Option(
            list(core.MODES), "--mode", help="Modes to evaluate (repeatable)."
        ),
        k1: float = typer.Option(bm25.K1, "--k1"),
        b: float = typer.Option(bm25.B, "--b"),
        ef_search: int = typer.Option(core.DEFAULT_EF_SEARCH, "--ef-search"),
        as_json: bool = typer.Option(False, "--json"),
        debug: bool = common.DebugOption,
    ) -> None:
        """nDCG@10 and recall@100 per search mode (documents embedded as title + text)."""
        bad = [m for m in mode if m not in core.MODES]
        if bad:
            common.stderr.print(f"error: unknown mode {bad[0]!r}: use hybrid, keyword or semantic")
            raise typer.Exit(common.EXIT_CONFIG)
        cfg = common.load_settings()

        async def main() -> None:
            data = beir.load(directory)
            async with runtime.open_runtime(cfg) as rt:
                svc = rt.require_service()
                timings = await beir.prepare(rt.pool, data, svc)
                report = await beir.evaluate(
                    rt.pool,
                    data,
                    svc,
                    modes=mode,
                    params=core.Params(k1=k1, b=b, ef_search=ef_search),
                )
            report["preparation"] = timings
            if as_json:
                print(json.dumps(report))
                return
            common.stdout.print(
                f"{report['dataset']}: {report['documents']} documents, "
                f"{report['queries']} queries, model {report['model']}"
            )
            for m, r in report["modes"].items():
                common.stdout.print(
                    f"  {m:<9} nDCG@10 {r['ndcg@10']:.4f}  recall@100 {r['recall@100']:.4f}"
                )

        common.run(main, debug=debug)
