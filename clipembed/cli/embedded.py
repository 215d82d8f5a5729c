"""``clipembed embedded status|stop``: the embedded PostgreSQL and Redis of ``CLIPEMBED_HOME``."""

from __future__ import annotations

import json

import typer

from clipembed import embedded
from clipembed.cli import common

app = typer.Typer(
    help="The embedded PostgreSQL and Redis under CLIPEMBED_HOME.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Whether each embedded server runs, its pid and the processes using it."""
    cfg = common.load_settings()
    data = {
        "postgres": embedded.postgres_status(cfg.clipembed_home),
        "redis": embedded.redis(cfg.clipembed_home).status(),
    }
    if as_json:
        print(json.dumps(data))
        return
    for name, info in data.items():
        if info["running"]:
            common.stdout.print(
                f"{name}: running (pid {info['pid']}, {len(info['users'])} users) "
                f"in {info['directory']}"
            )
        else:
            common.stdout.print(f"{name}: not running ({info['directory']})")


@app.command("stop")
def stop() -> None:
    """Stop both embedded servers now, even while processes still use them."""
    cfg = common.load_settings()
    pg = embedded.stop_postgres(cfg.clipembed_home)
    rd = embedded.redis(cfg.clipembed_home).stop()
    common.stdout.print(
        f"postgres: {'stopped' if pg else 'was not running'}; "
        f"redis: {'stopped' if rd else 'was not running'}"
    )
