"""``clipembed eval beir DIR``: search quality on a public benchmark, with the product's code.

The report holds nDCG@10 and recall@100 per mode, a reference BM25 (bm25s) computed in the same
run on the same files, and a verdict (does hybrid beat both of its branches and the reference?).
Exit codes: 0 measured, 1 the run failed, 2 bad usage (unknown mode, missing directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.eval import beir, known_item
from clipembed.search import bm25, core, fusion

app = typer.Typer(help="Measure search quality.", no_args_is_help=True, add_completion=False)


def _check_modes(modes: list[str]) -> None:
    """Exit with a usage error naming the first mode that is not hybrid, keyword or semantic."""
    for mode in modes:
        try:
            core.parse_mode(mode)
        except ValueError as exc:
            common.stderr.print(f"error: {exc}")
            raise typer.Exit(common.EXIT_CONFIG) from None


@app.command("beir")
def beir_command(
    directory: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="A BEIR dataset directory."
    ),
    mode: list[str] = typer.Option(
        list(core.MODES), "--mode", help="Modes to evaluate (repeatable)."
    ),
    k1: float = typer.Option(bm25.K1, "--k1", help="BM25 term-frequency saturation."),
    b: float = typer.Option(bm25.B, "--b", help="BM25 length normalisation."),
    ef_search: int = typer.Option(core.DEFAULT_EF_SEARCH, "--ef-search"),
    rrf_k: int = typer.Option(fusion.RRF_K, "--rrf-k", help="RRF rank constant."),
    keyword_weight: float = typer.Option(
        core.Params.keyword_weight, "--keyword-weight", help="RRF weight of the BM25 branch."
    ),
    semantic_weight: float = typer.Option(
        core.Params.semantic_weight, "--semantic-weight", help="RRF weight of the vectors."
    ),
    reference: bool = typer.Option(
        True, "--reference/--no-reference", help="Also score bm25s on the same files."
    ),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """nDCG@10 and recall@100 per search mode (documents embedded as title + text)."""
    _check_modes(mode)
    try:
        data = beir.load(directory)
    except beir.DatasetError as exc:
        common.stderr.print(f"error: {exc}", markup=False)
        raise typer.Exit(common.EXIT_CONFIG) from None
    cfg = common.load_settings()
    params = core.Params(
        k1=k1,
        b=b,
        ef_search=ef_search,
        rrf_k=rrf_k,
        keyword_weight=keyword_weight,
        semantic_weight=semantic_weight,
    )

    async def main() -> None:
        needs_vectors = any(m != "keyword" for m in mode)
        async with runtime.open_runtime(cfg, with_service=needs_vectors) as rt:
            timings = await beir.prepare(rt.pool, data, rt.service, dimensions=rt.dimensions)
            report = await beir.evaluate(rt.pool, data, rt.service, modes=mode, params=params)
        report["preparation"] = timings
        if reference:
            report["reference"] = beir.reference_bm25(data)
        report["verdict"] = beir.verdict(report)
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
        ref = report.get("reference", {})
        if "ndcg@10" in ref:
            common.stdout.print(
                f"  {'bm25s':<9} nDCG@10 {ref['ndcg@10']:.4f}  recall@100 "
                f"{ref['recall@100']:.4f}  (reference, stemmer: {ref['stemmer']})"
            )
        elif ref:
            common.stdout.print(f"  reference skipped: {ref['error']}")
        for check, value in report["verdict"].items():
            common.stdout.print(f"  {check}: {value}", markup=False)

    common.run(main, debug=debug)


@app.command("known-item")
def known_item_command(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="Clips or stream titles, JSONL[.gz]."
    ),
    mode: list[str] = typer.Option(
        list(core.MODES), "--mode", help="Modes to evaluate (repeatable)."
    ),
    seed: int = typer.Option(7, "--seed", help="Which titles and words are drawn."),
    per_language: int = typer.Option(150, "--per-language", min=1, help="Queries per language."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Read at most N records."),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """success@10 and MRR@10 of words cut from inside real titles, per mode and language."""
    _check_modes(mode)
    try:
        docs = known_item.read(path, limit=limit)
    except (OSError, ValueError) as exc:
        common.stderr.print(f"error: cannot read {path}: {exc}", markup=False)
        raise typer.Exit(common.EXIT_CONFIG) from None
    queries = known_item.build_queries(docs, seed=seed, per_language=per_language)
    cfg = common.load_settings()
    name = "".join(c if c.isalnum() else "_" for c in path.name.split(".")[0]).lower()

    async def main() -> None:
        needs_vectors = any(m != "keyword" for m in mode)
        async with runtime.open_runtime(cfg, with_service=needs_vectors) as rt:
            await known_item.prepare(rt.pool, name, docs, rt.service, dimensions=rt.dimensions)
            report = await known_item.evaluate(
                rt.pool,
                name,
                docs,
                queries,
                rt.service,
                modes=mode,
                multilingual=cfg.multilingual,
            )
        if as_json:
            print(json.dumps(report))
            return
        common.stdout.print(
            f"{report['dataset']}: {report['documents']} titles, {report['queries']} queries "
            f"({report['inflected_queries']} inflected), model {report['model']}"
        )
        for m, per_lang in report["modes"].items():
            for lang, r in per_lang.items():
                common.stdout.print(
                    f"  {m:<9} {lang:<4} n={r['queries']:<4} success@10 "
                    f"{r['success@10']:.3f}  MRR@10 {r['mrr@10']:.3f}"
                )

    common.run(main, debug=debug)
