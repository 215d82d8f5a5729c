"""``clipembed serve``."""

from __future__ import annotations

import typer

from clipembed.cli import common


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", envvar="CLIPEMBED_HOST"),
        port: int = typer.Option(8000, "--port", envvar="CLIPEMBED_PORT"),
        debug: bool = common.DebugOption,
    ) -> None:
        """HTTP API: /search, /clips/{id}/similar, /healthz, /metrics (scheduler with EMBEDDING_ENABLED)."""
        import uvicorn

        from clipembed import logs
        from clipembed.api.app import create_app

        cfg = common.load_settings()
        logs.setup()
        try:
            uvicorn.run(
                create_app(cfg),
                host=host,
                port=port,
                log_level="info",
                timeout_graceful_shutdown=30,
            )
        except Exception as exc:
            common.fail(exc, common.EXIT_CONFIG, debug=debug)
