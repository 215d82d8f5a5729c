"""``clipembed import``: load clips from JSON Lines (optionally gzipped), upserting by twitch_clip_id.

Each line is one clip with the ``clips`` column names. A bad line (not JSON, a missing required
field, a value of the wrong type or too long for its column) is reported with its line number
and reason and skipped; every good line still loads. Rows are validated with pydantic, then
upserted in batches through one ``executemany`` per batch (psycopg pipelines it: one round trip
per batch, not per row).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

BATCH = 1000  # rows per upsert round trip


class ClipRecord(BaseModel):
    """One importable clip; limits mirror the column types so the database never rejects a row."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    twitch_clip_id: str = Field(min_length=1, max_length=100)
    twitch_clip_url: str = Field(min_length=1)
    embed_url: str = Field(min_length=1)
    title: str = Field(max_length=255)
    creator_name: str = Field(max_length=100)
    creator_id: str | None = Field(default=None, max_length=100)
    broadcaster_name: str = Field(min_length=1, max_length=100)
    broadcaster_id: str | None = Field(default=None, max_length=100)
    game_id: str | None = Field(default=None, max_length=50)
    game_name: str | None = Field(default=None, max_length=100)
    language: str | None = Field(default=None, max_length=10)
    thumbnail_url: str | None = None
    duration: float | None = None
    view_count: int = 0
    created_at: dt.datetime
    vote_score: int = 0
    is_removed: bool = False
    is_nsfw: bool = False

    @field_validator("creator_id", "broadcaster_id", "game_id", mode="before")
    @classmethod
    def _ids_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        return v if v.tzinfo else v.replace(tzinfo=dt.UTC)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # PostgreSQL text cannot hold NUL; strip it rather than reject the clip.
        return v.replace("\x00", "") if isinstance(v, str) else v


COLUMNS = list(ClipRecord.model_fields)

UPSERT = (
    f"INSERT INTO clips ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT (twitch_clip_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("twitch_clip_id",))
)


@dataclasses.dataclass
class ImportReport:
    lines: int = 0
    loaded: int = 0
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def parse_lines(lines: Iterator[str]) -> Iterator[tuple[int, ClipRecord | str]]:
    """(line number, record) for good lines, (line number, reason) for bad ones; blanks skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            yield number, f"not valid JSON ({getattr(exc, 'msg', exc)})"
            continue
        if not isinstance(data, dict):
            yield number, "not a JSON object"
            continue
        try:
            yield number, ClipRecord.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field = ".".join(str(x) for x in first["loc"]) or "row"
            yield number, f"{field}: {first['msg']}"


async def import_file(conn: psycopg.AsyncConnection[Any], path: Path) -> ImportReport:
    """Upsert every good line of ``path``; returns counts and the bad lines."""
    report = ImportReport()
    batch: list[tuple[Any, ...]] = []

    async def flush() -> None:
        if not batch:
            return
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(UPSERT, batch)
        report.loaded += len(batch)
        batch.clear()

    with _open(path) as handle:
        for number, item in parse_lines(iter(handle)):
            report.lines = number
            if isinstance(item, str):
                report.bad.append((number, item))
                logger.warning("bad row skipped", extra={"line": number, "reason": item})
                continue
            batch.append(tuple(getattr(item, c) for c in COLUMNS))
            if len(batch) >= BATCH:
                await flush()
    await flush()
    return report
