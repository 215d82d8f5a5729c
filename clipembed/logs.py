"""Logging: stdlib ``logging`` with structured fields passed through ``extra=``.

One event per batch with counts and timings, e.g.
``logger.info("batch embedded", extra={"clips": 100, "ms": 52.1})`` prints
``... batch embedded clips=100 ms=52.1``. Secrets never reach a log line: settings hold the key
as ``SecretStr`` and nothing logs request headers.
"""

from __future__ import annotations

import logging
import os
import sys

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """``time level logger message key=value ...``: greppable and still readable."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return base


def setup(level: str | int | None = None) -> None:
    """Configure the root logger once, to stderr. ``CLIPEMBED_LOG_LEVEL`` overrides INFO."""
    level = level or os.environ.get("CLIPEMBED_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if any(getattr(h, "_clipembed", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._clipembed = True  # type: ignore[attr-defined]
    handler.setFormatter(
        KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their request logs could echo headers; keep them at WARNING.
    for name in (
        "httpx",
        "httpx2",
        "httpcore",
        "openai",
        "urllib3",
        "sentence_transformers",
        "pgserver",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
