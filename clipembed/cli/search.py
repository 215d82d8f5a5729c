"""``clipembed search "query"``."""

from __future__ import annotations

import json

import typer

from clipembed import runtime
from clipembed.cli import common
from clipembed.search import clips as clip_search
from clipembed.search import core

app = typer.Typer(add_completion=False)


@app.command("search")
def search(
    query: str = typer.Argument(..., help="What to look for."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, keyword or semantic."),
    game: str | None = typer.Option(None, "--game"),
    broadcaster: str | None = typer.Option(None, "--broadcaster"),
    language: str | None = typer.Option(None, "--language"),
    limit: int = typer.Option(10, "--limit", min=1, max=clip_search.MAX_LIMIT),
    offset: int = typer.Option(0, "--offset", min=0),
    include_nsfw: bool = typer.Option(False, "--include-nsfw"),
    as_json: bool = typer.Option(False, "--json"),
    debug: bool = common.DebugOption,
) -> None:
    """Hybrid search: BM25 keywords + HNSW vectors fused by reciprocal rank."""
    try:  # before any connection or model load
        parsed = core.parse_mode(mode)
    except ValueError as exc:
        common.stderr.print(f"error: {exc}")
        raise typer.Exit(common.EXIT_CONFIG) from None
    cfg = common.load_settings()

    async def main() -> int:
        params = core.Params(mode=parsed, limit=limit, offset=offset)
        filters = clip_search.Filters(
            game=game, broadcaster=broadcaster, language=language, include_nsfw=include_nsfw
        )
        async with runtime.open_runtime(cfg, with_service=mode != "keyword", search=True) as rt:
            try:
                outcome = await clip_search.search_detailed(
                    rt.reader,
                    rt.service_for if rt.service is not None else None,
                    query,
                    params=params,
                    filters=filters,
                )
            except clip_search.InvalidQuery as exc:
                common.stderr.print(f"error: {exc}")
                return common.EXIT_CONFIG
        results = outcome.results
        if as_json:
            doc = {
                "query": query,
                "mode": mode,
                "space": outcome.space,
                "degraded": outcome.degraded,
                "results": results,
            }
            print(json.dumps(doc, default=str, ensure_ascii=False))
            return common.EXIT_OK
        if not results:
            common.stdout.print("no results")
        for r in results:
            detail = []
            if r["keyword"]:
                detail.append(f"kw #{r['keyword']['rank']}")
            if r["semantic"]:
                detail.append(f"vec #{r['semantic']['rank']} {r['semantic']['score']:.3f}")
            common.stdout.print(
                f"{r['rank']:>3}. {r['title']}  — {r['broadcaster_name']}"
                f"{' · ' + r['game_name'] if r['game_name'] else ''}  [{', '.join(detail)}]",
                markup=False,
            )
        return common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))
