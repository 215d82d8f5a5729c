"""``clipembed serve``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import typer
import uvicorn

from clipembed.cli import common


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown (exit status -15); a
    requested, clean shutdown of ours exits 0 instead, like the other long-running commands."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.handle_exit(signum, frame)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


app = typer.Typer(add_completion=False)


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", envvar="CLIPEMBED_HOST"),
    port: int = typer.Option(8000, "--port", envvar="CLIPEMBED_PORT"),
    debug: bool = common.DebugOption,
) -> None:
    """HTTP API: /search, /clips/{id}/similar, /healthz, /metrics (scheduler with EMBEDDING_ENABLED).

    Behind a proxy, set CLIPEMBED_TRUSTED_PROXIES (docs/security.md)."""
    from clipembed import logs
    from clipembed.api import clients
    from clipembed.api.app import create_app

    cfg = common.load_settings()
    logs.setup()
    # forwarded headers and the access log are the app's (trusted proxies only, redacted)
    config = clients.server_config(
        create_app(cfg), host=host, port=port, log_level="info", timeout_graceful_shutdown=30
    )
    server = _Server(config)
    try:
        server.run()
    except Exception as exc:
        common.fail(exc, common.EXIT_CONFIG, debug=debug)
    if not server.started:  # the lifespan failed: bad configuration or unmigrated schema
        raise typer.Exit(common.EXIT_CONFIG)
