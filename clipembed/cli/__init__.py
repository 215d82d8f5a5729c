"""The ``clipembed`` command: thin typer commands that call into the modules.

Each command (or command group) is a module-level ``app`` (a ``typer.Typer``) in its own module,
imported only when that command runs or shows its own ``--help`` (:mod:`clipembed.cli.lazy`):
``clipembed --help`` loads typer and nothing of clipembed's, and no command but ``eval`` and
``model compare`` loads ``clipembed.eval``. Exit codes: 0 ok, 1 work failed, 2 usage or
configuration error (see :mod:`clipembed.cli.common`).
"""

from __future__ import annotations

import typer

from clipembed.cli import lazy

#: name -> (the module:attribute of its typer app, the line ``clipembed --help`` shows for it),
#: in the order the help lists them (tests/unit/test_cli_lazy.py checks each line).
COMMANDS: dict[str, tuple[str, str]] = {
    "embed": (
        "clipembed.cli.embed:app",
        "Embed texts through the configured provider and cache, and print the vectors.",
    ),
    "import": (
        "clipembed.cli.importer:app",
        "Load clips (the clips column names), upserting by twitch_clip_id; bad rows are reported.",
    ),
    "backfill": (
        "clipembed.cli.backfill:app",
        "Embed every live clip whose embedding is missing or stale. Resumable; Ctrl-C stops cleanly.",
    ),
    "scheduler": (
        "clipembed.cli.scheduler:app",
        "Embed recent clips without an embedding, at start and every interval; SIGTERM exits 0.",
    ),
    "serve": (
        "clipembed.cli.serve:app",
        "HTTP API: /search, /clips/{id}/similar, /healthz, /metrics (scheduler with EMBEDDING_ENABLED).",
    ),
    "stats": (
        "clipembed.cli.stats:app",
        "Coverage, recent and stale embeddings, counts by model, the queue, the replica's lag.",
    ),
    "status": (
        "clipembed.cli.status:app",
        "Coverage, backlog, throughput, errors, spend, workers and index: the console's figures.",
    ),
    "search": (
        "clipembed.cli.search:app",
        "Hybrid search: BM25 keywords + HNSW vectors fused by reciprocal rank.",
    ),
    "worker": (
        "clipembed.cli.worker:app",
        "Embed queued clips as they are inserted and edited; run as many as the load needs.",
    ),
    "migrate": (
        "clipembed.cli.migrate:app",
        "Create, roll back or inspect the database schema.",
    ),
    "eval": (
        "clipembed.cli.evaluate:app",
        "Measure search quality.",
    ),
    "failed": (
        "clipembed.cli.failed:app",
        "Clips that exhausted their embedding attempts.",
    ),
    "embedded": (
        "clipembed.cli.embedded:app",
        "The embedded PostgreSQL and Redis under CLIPEMBED_HOME.",
    ),
    "admin": (
        "clipembed.cli.admin:app",
        "Access to the operations console.",
    ),
    "batches": (
        "clipembed.cli.batches:app",
        "Batch API backfills (backfill --via batch).",
    ),
    "model": (
        "clipembed.cli.model:app",
        "Embedding spaces: add a model, fill it, compare, promote, roll back, drop.",
    ),
}

app = typer.Typer(
    cls=lazy.group(COMMANDS),
    name="clipembed",
    help="Embeddings for every Twitch clip, kept complete and current in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Nothing to do before a command (typer builds a group only for an app with a callback)."""


def main() -> None:
    app()
