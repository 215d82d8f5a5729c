"""Helpers for the security tests: the real app on a real socket, raw HTTP, the server's log.

- ``secure_server(**settings)`` -> :class:`Served`: ``create_app`` on a migrated database with
  the fake provider and this test's Redis prefix, served by uvicorn as ``clipembed serve``
  serves it (``tests.plugins.browser.live_server``), plus an admin token.
- ``server_log``: every line the process logs during the test, formatted by clipembed's own
  formatters (text and JSON), which is what an operator's log receives.
- ``spool``: every ``tempfile.TemporaryFile`` created during the test (what a
  ``SpooledTemporaryFile`` rolls over to: Starlette's multipart spooling) lands in a directory
  of the test's own and stays there (Python unlinks them at once, so a listing of /tmp would
  never see one), so "nothing reached the disk" is a size that can be measured.

Raw HTTP over a socket is :mod:`tests.plugins.rawhttp` (plain helpers, imported directly).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clipembed import logs, settings
from clipembed.api.app import create_app
from tests.plugins.admin import admin_token
from tests.plugins.waiting import wait_until


@dataclasses.dataclass
class Served:
    base: str
    cfg: settings.Settings
    token: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.base)
        return str(parts.hostname), int(parts.port or 80)


@pytest.fixture
def secure_server(database_url, openai_settings, live_server) -> Callable[..., Served]:
    def make(**overrides: Any) -> Served:
        cfg = openai_settings(database_url=database_url, **overrides)
        return Served(live_server(create_app(cfg)), cfg, admin_token(database_url))

    return make


class ServerLog:
    """The log lines written while the test runs, as clipembed's formatters print them."""

    def __init__(self) -> None:
        self.text = io.StringIO()
        self.json = io.StringIO()

    def lines(self) -> list[str]:
        return self.text.getvalue().splitlines() + self.json.getvalue().splitlines()

    def access(self) -> list[str]:
        return [line for line in self.text.getvalue().splitlines() if "clipembed.access" in line]

    def wait_for_access(self, count: int) -> list[str]:
        """The access lines once there are ``count`` (a request's line is written just after
        its answer, so the last may still be on its way when the client has read it)."""

        def enough() -> list[str] | None:
            lines = self.access()
            return lines if len(lines) >= count else None

        found: list[str] = wait_until(enough, what=f"{count} access log lines")
        return found


@pytest.fixture
def server_log() -> Iterator[ServerLog]:
    captured = ServerLog()
    handlers = [logging.StreamHandler(captured.text), logging.StreamHandler(captured.json)]
    handlers[0].setFormatter(logs.formatter("text"))
    handlers[1].setFormatter(logs.formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield captured
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)


@dataclasses.dataclass
class Spool:
    directory: Path
    created: list[str]

    def size(self) -> int:
        """Bytes of every file in the directory (what reached the disk)."""
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    def files(self) -> list[Path]:
        return [p for p in self.directory.rglob("*") if p.is_file()]


@pytest.fixture
def spool(tmp_path, monkeypatch) -> Spool:
    directory = tmp_path / "spool"
    directory.mkdir()
    created: list[str] = []
    named = tempfile.NamedTemporaryFile

    def kept_temporary_file(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(dir=str(directory), delete=False)
        handle = named(*args, **kwargs)
        created.append(handle.name)
        return handle

    monkeypatch.setattr(tempfile, "TemporaryFile", kept_temporary_file)
    return Spool(directory, created)
