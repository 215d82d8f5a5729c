"""The ``clipembed`` command: thin typer commands that call into the modules.

Each command group lives in its own module with a ``register(app)`` function, so commands
can be added without touching the others. Exit codes: 0 ok, 1 work failed, 2 usage or
configuration error (see :mod:`clipembed.cli.common`).
"""

from __future__ import annotations

import typer

from clipembed.cli import (
    admin,
    backfill,
    batches,
    compare,
    embed,
    embedded,
    evaluate,
    failed,
    importer,
    migrate,
    model,
    scheduler,
    search,
    serve,
    stats,
    status,
    worker,
)

app = typer.Typer(
    name="clipembed",
    help="Embeddings for every Twitch clip, kept complete and current in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (
    migrate,
    embed,
    importer,
    backfill,
    scheduler,
    serve,
    stats,
    status,
    search,
    evaluate,
    worker,
    failed,
    embedded,
    admin,
    batches,
    model,
    compare,
):
    _module.register(app)


def main() -> None:
    app()
