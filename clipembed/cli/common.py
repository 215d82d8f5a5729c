"""What every command shares: settings, logging, the event loop and exit codes.

Exit codes mean something: 0 ok, 1 the work failed (some clips failed, a job error),
2 usage or configuration error (bad settings, unreachable database, schema not migrated).
Errors print one readable line; ``--debug`` (or ``CLIPEMBED_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from clipembed import errors, logs, settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)

DebugOption = typer.Option(
    False, "--debug", envvar="CLIPEMBED_DEBUG", help="Show tracebacks on errors."
)


def load_settings(**overrides: Any) -> settings.Settings:
    """Settings from the environment, or exit 2 with one clear line."""
    try:
        return settings.load(**overrides)
    except errors.ConfigurationError as exc:
        fail(exc, EXIT_CONFIG, debug=False)
        raise AssertionError("unreachable") from None


def fail(exc: BaseException, code: int, *, debug: bool) -> None:
    """Print ``error: <one line>`` (and the traceback with --debug) and exit with ``code``."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc).strip() or type(exc).__name__
    stderr.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def run(main: Callable[[], Coroutine[Any, Any, T]], *, debug: bool = False) -> T:
    """Run an async command body with logging set up and errors mapped to exit codes."""
    logs.setup()
    try:
        return asyncio.run(main())
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        stderr.print("interrupted")
        raise typer.Exit(130) from None
    except (errors.ConfigurationError, errors.SchemaError) as exc:
        fail(exc, EXIT_CONFIG, debug=debug)
    except errors.ClipembedError as exc:
        fail(exc, EXIT_FAILED, debug=debug)
    except Exception as exc:  # a bug: still one line, with the traceback on --debug
        fail(
            exc if debug else RuntimeError(f"{type(exc).__name__}: {exc}"), EXIT_FAILED, debug=debug
        )
    raise AssertionError("unreachable")


def is_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (finish in-flight work); a second signal exits at once.

    Signals reach the main thread only: a command run on another one (a test's ``CliRunner``
    thread) has none to handle, and asyncio would refuse the handlers.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()

    def handler(signame: str) -> None:
        if stop.is_set():
            stderr.print(f"{signame} again: exiting now")
            os._exit(130)
        stderr.print(f"{signame}: finishing the batches in flight (again to exit now)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig.name)
