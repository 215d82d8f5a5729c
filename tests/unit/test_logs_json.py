"""CLIPEMBED_LOG_FORMAT=json: one JSON object per line, whatever the extras hold."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from clipembed import logs


@pytest.fixture
def root_restored() -> Iterator[logging.Logger]:
    """The root logger's handlers and level as they were, whatever setup() does here."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers = [h for h in handlers if not getattr(h, "_clipembed", False)]
    try:
        yield root
    finally:
        root.handlers = handlers
        root.setLevel(level)


@pytest.fixture
def emit() -> Iterator:
    """``emit(fn)`` runs ``fn(logger)`` with a JsonFormatter handler; returns the lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"clipembed.test.{uuid.uuid4().hex[:8]}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def run(fn) -> list[dict]:
        fn(logger)
        text = stream.getvalue()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    yield run
    logger.removeHandler(handler)


def test_core_fields_and_extras(emit):
    before = dt.datetime.now(dt.UTC)
    [line] = emit(lambda log: log.info("batch embedded", extra={"clips": 100, "ms": 52.1}))
    after = dt.datetime.now(dt.UTC)
    assert line["level"] == "INFO"
    assert line["message"] == "batch embedded"
    assert line["logger"].startswith("clipembed.test.")
    assert line["clips"] == 100 and line["ms"] == 52.1
    assert "exception" not in line
    assert line["time"].endswith("Z")
    when = dt.datetime.fromisoformat(line["time"])
    assert when.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= when <= after
    assert list(line)[:4] == ["time", "level", "logger", "message"]


def test_message_arguments_are_interpolated(emit):
    [line] = emit(lambda log: log.warning("lost %d leases on %s", 3, "queue"))
    assert line["message"] == "lost 3 leases on queue"
    assert line["level"] == "WARNING"


def test_exception_is_one_string_field(emit):
    def fail(log):
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("batch failed", extra={"batch": 7})

    [line] = emit(fail)
    assert line["level"] == "ERROR"
    assert line["batch"] == 7
    assert isinstance(line["exception"], str)
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in line["exception"]


def test_non_serialisable_extras_become_strings(emit):
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    cycle: list = []
    cycle.append(cycle)
    extra = {
        "path": Path("/tmp/x"),
        "amount": Decimal("1.5"),
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "ids": {1, 2} - {2},
        "key": SecretStr("sk-very-secret"),
        "opaque": Opaque(),
        "broken": Broken(),
        "nan": float("nan"),
        "tuple_keys": {(1, 2): "pair"},
        "cycle": cycle,
        "raw": b"\x00\xff",
        "nested": {"ok": [1, "two", None, True]},
    }
    [line] = emit(lambda log: log.info("odd values", extra=extra))
    assert line["path"] == "/tmp/x"
    assert line["amount"] == "1.5"
    assert line["when"] == "2026-01-02 03:04:05+00:00"
    assert line["ids"] == "{1}"
    assert line["key"] == "**********"  # SecretStr's str(): never the secret
    assert line["opaque"] == "opaque!"
    assert line["broken"] == "<unprintable Broken>"
    assert line["nan"] == "nan"
    assert line["tuple_keys"] == "{(1, 2): 'pair'}"
    assert isinstance(line["cycle"], str)
    assert line["raw"] == "b'\\x00\\xff'"
    assert line["nested"] == {"ok": [1, "two", None, True]}


def test_extras_never_replace_core_fields(emit):
    [line] = emit(
        lambda log: log.info(
            "hello", extra={"time": "x", "level": "y", "logger": "z", "exception": "w"}
        )
    )
    assert line["level"] == "INFO" and line["message"] == "hello"
    assert line["extra_time"] == "x" and line["extra_level"] == "y"
    assert line["extra_logger"] == "z" and line["extra_exception"] == "w"
    assert "exception" not in line


def test_one_line_per_record_even_with_newlines(emit):
    lines = emit(
        lambda log: (
            log.info("first\nline", extra={"note": "a\nb"}),
            log.error("second"),
        )
    )
    assert [entry["message"] for entry in lines] == ["first\nline", "second"]
    assert lines[0]["note"] == "a\nb"


def test_bad_format_arguments_do_not_lose_the_line():
    # formatted directly: pytest's own capture handler would raise on this record first
    record = logging.LogRecord("clipembed.x", logging.INFO, __file__, 1, "needs %d", ("nan",), None)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "needs %d ('nan',)"


def test_setup_reads_the_env_var(root_restored, monkeypatch, capsys):
    monkeypatch.setenv("CLIPEMBED_LOG_FORMAT", "json")
    logs.setup("INFO")
    logging.getLogger("clipembed.test.setup").info("hello", extra={"clips": 2})
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert line["message"] == "hello" and line["clips"] == 2
    assert line["logger"] == "clipembed.test.setup"

    # called again with the default: back to today's key=value text, on the same handler
    monkeypatch.delenv("CLIPEMBED_LOG_FORMAT")
    logs.setup("INFO")
    assert sum(getattr(h, "_clipembed", False) for h in root_restored.handlers) == 1
    logging.getLogger("clipembed.test.setup").info("hello", extra={"clips": 2})
    err = capsys.readouterr().err
    assert err.rstrip().endswith("INFO clipembed.test.setup hello clips=2")


def test_unknown_format_falls_back_to_text(root_restored, monkeypatch, capsys):
    monkeypatch.setenv("CLIPEMBED_LOG_FORMAT", "yaml")
    logs.setup("INFO")
    logging.getLogger("clipembed.test.setup").info("plain", extra={"k": "v"})
    err = capsys.readouterr().err
    assert "CLIPEMBED_LOG_FORMAT='yaml'" in err
    assert err.rstrip().endswith("INFO clipembed.test.setup plain k=v")


def test_a_process_logs_json_lines_to_stderr(tmp_path):
    script = (
        "import logging\n"
        "from clipembed import logs\n"
        "logs.setup()\n"
        "log = logging.getLogger('clipembed.worker')\n"
        "log.info('claimed', extra={'items': 3, 'where': object()})\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('batch failed')\n"
    )
    env = {"CLIPEMBED_LOG_FORMAT": "json", "CLIPEMBED_LOG_LEVEL": "INFO", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=True,
    )
    first, second = (json.loads(line) for line in done.stderr.splitlines())
    assert first["message"] == "claimed" and first["items"] == 3
    assert first["where"].startswith("<object object at ")
    assert second["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in second["exception"]
