"""``clipembed admin token create|list|revoke``: who may use the console and /status."""

from __future__ import annotations

import json

import typer

from clipembed import runtime
from clipembed.admin import auth
from clipembed.cli import common

app = typer.Typer(
    help="Access to the operations console.", no_args_is_help=True, add_completion=False
)
token = typer.Typer(help="Admin tokens (stored hashed; printed once).", no_args_is_help=True)
app.add_typer(token, name="token")


@token.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Who or what holds it (unique)."),
    debug: bool = common.DebugOption,
) -> None:
    """Create a token and print it once: keep it; only its digest is stored."""
    cfg = common.load_settings()

    async def main() -> None:
        async with runtime.open_runtime(cfg, with_service=False) as rt:
            secret = await auth.create_token(rt.pool, name)
        common.stderr.print(f"admin token {name!r} created; it is shown once:", markup=False)
        print(secret)

    common.run(main, debug=debug)


@token.command("list")
def list_(as_json: bool = typer.Option(False, "--json"), debug: bool = common.DebugOption) -> None:
    """Names, creation, last use and revocation (never the tokens)."""
    cfg = common.load_settings()

    async def main() -> None:
        async with runtime.open_runtime(cfg, with_service=False) as rt:
            rows = await auth.list_tokens(rt.pool)
        if as_json:
            print(json.dumps(rows))
            return
        if not rows:
            common.stdout.print("no admin tokens")
        for r in rows:
            state = f"revoked {r['revoked_at'][:16]}" if r["revoked_at"] else "active"
            used = r["last_used_at"][:16] if r["last_used_at"] else "never used"
            common.stdout.print(
                f"{r['name']}  {state}  created {r['created_at'][:16]}  {used}", markup=False
            )

    common.run(main, debug=debug)


@token.command("revoke")
def revoke(name: str = typer.Option(..., "--name"), debug: bool = common.DebugOption) -> None:
    """Revoke a token; its browser sessions end at once."""
    cfg = common.load_settings()

    async def main() -> int:
        async with runtime.open_runtime(cfg, with_service=False) as rt:
            done = await auth.revoke_token(rt.pool, name)
        if not done:
            common.stderr.print(f"no active admin token named {name!r}", markup=False)
            return common.EXIT_FAILED
        common.stdout.print(f"revoked {name!r}", markup=False)
        return common.EXIT_OK

    raise typer.Exit(common.run(main, debug=debug))
