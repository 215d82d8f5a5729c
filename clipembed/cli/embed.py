"""``clipembed embed TEXT... [--json] [--stdin]``: check a configuration from the outside."""

from __future__ import annotations

import json
import sys

import typer

from clipembed.cli import common
from clipembed.embedding import service as service_mod

app = typer.Typer(add_completion=False)


@app.command("embed")
def embed(
    texts: list[str] = typer.Argument(None, help="Texts to embed."),
    as_json: bool = typer.Option(False, "--json", help="Print every vector as JSON."),
    stdin: bool = typer.Option(
        False, "--stdin", help="Read texts from standard input, one per line."
    ),
    debug: bool = common.DebugOption,
) -> None:
    """Embed texts through the configured provider and cache, and print the vectors."""
    items = list(texts or [])
    if stdin:
        items += [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not items:
        common.stderr.print("error: give at least one TEXT, or --stdin")
        raise typer.Exit(common.EXIT_CONFIG)
    cfg = common.load_settings()

    async def main() -> int:
        svc = await service_mod.open_service(cfg)
        try:
            outcome = await svc.embed_detailed(items)
        finally:
            await svc.aclose()
        if as_json:
            doc = [
                {
                    "text": text,
                    "model": svc.model,
                    "dimensions": svc.dimensions,
                    "embedding": vec.tolist() if vec is not None else None,
                    "cached": cached,
                    "error": str(err) if err is not None else None,
                }
                for text, vec, cached, err in zip(
                    items, outcome.vectors, outcome.from_cache, outcome.errors, strict=True
                )
            ]
            sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        else:
            for text, vec, cached, err in zip(
                items, outcome.vectors, outcome.from_cache, outcome.errors, strict=True
            ):
                if vec is None:
                    common.stdout.print(f"{text!r}: error: {err}")
                    continue
                head = ", ".join(f"{x:.4f}" for x in vec[:5])
                source = "cache" if cached else "provider"
                common.stdout.print(f"{text!r}: {len(vec)} dims [{head}, ...] from {source}")
        s = outcome.stats
        common.stderr.print(
            f"{s.texts} texts, {s.cache_hits} from cache, {s.requests} requests, "
            f"{s.tokens} tokens, {s.retries} retries, {s.failures} failed"
        )
        return common.EXIT_FAILED if s.failures else common.EXIT_OK

    code = common.run(main, debug=debug)
    raise typer.Exit(code)
