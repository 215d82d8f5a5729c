"""Progress for long jobs: a rich bar with rate and ETA on a terminal, a log line otherwise.

:class:`Progress` counts clips (backfills); :class:`ImportProgress` follows a file import by bytes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

logger = logging.getLogger(__name__)

LOG_EVERY = 5.0  # seconds between progress lines when not on a terminal


class Progress:
    """``start(total)``, ``advance(n, **counts)``, ``stop()``; picks bar or log lines."""

    def __init__(self, label: str, *, terminal: bool) -> None:
        self.label = label
        self.terminal = terminal
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self.done = 0
        self.total = 0
        self._started = 0.0
        self._last_log = 0.0

    def start(self, total: int) -> None:
        self.total = total
        self._started = self._last_log = time.monotonic()
        if self.terminal:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=max(total, 1), rate="")

    def advance(self, n: int, **counts: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        if self._bar is not None and self._task is not None:
            if self.done > self.total:
                self.total = self.done
                self._bar.update(self._task, total=self.total)
            self._bar.update(self._task, advance=n, rate=f"{rate:,.0f} clips/s")
            return
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            remaining = max(self.total - self.done, 0)
            eta = remaining / rate if rate > 0 else float("inf")
            logger.info(
                f"{self.label}: {self.done}/{self.total}",
                extra={
                    "rate_per_s": round(rate, 1),
                    "eta_s": round(eta, 1) if eta != float("inf") else "?",
                    **counts,
                },
            )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class ImportProgress:
    """A file import's progress by bytes read (compressed bytes of a .gz), with the clips
    loaded and their rate; a bar on a terminal, a log line every LOG_EVERY s otherwise.
    ``update`` may be called from the thread that parses the file."""

    def __init__(self, path: Path, console: Console, *, terminal: bool | None = None) -> None:
        self.total = max(path.stat().st_size, 1)
        self.terminal = console.is_terminal if terminal is None else terminal
        self._console = console
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._started = self._last_log = time.monotonic()

    def __enter__(self) -> ImportProgress:
        self._started = self._last_log = time.monotonic()
        if self.terminal:
            self._bar = RichProgress(
                TextColumn("[bold]import"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[loaded]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("import", total=self.total, loaded="")
        return self

    def update(self, read: int, loaded: int) -> None:
        rate = loaded / max(time.monotonic() - self._started, 1e-9)
        if self._bar is not None and self._task is not None:
            label = f"{loaded:,} clips, {rate:,.0f}/s"
            self._bar.update(self._task, completed=min(read, self.total), loaded=label)
            return
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            logger.info(
                f"import: {loaded} clips loaded",
                extra={"read_pct": round(100 * read / self.total, 1), "rate_per_s": round(rate)},
            )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
