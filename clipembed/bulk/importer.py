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
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import psycopg
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clipembed import clips, errors, source
from clipembed.source import queries as source_queries
from clipembed.store import clip_table

logger = logging.getLogger(__name__)

BATCH = 1000  # rows per upsert round trip
INT4_MAX = 2**31 - 1  # PostgreSQL integer columns (view_count, vote_score)
#: Errors that condemn one row (a value or a constraint), not the connection or the file.
ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


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
    duration: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # seconds
    view_count: int = Field(default=0, ge=0, le=INT4_MAX)
    created_at: dt.datetime
    vote_score: int = Field(default=0, ge=-INT4_MAX - 1, le=INT4_MAX)
    is_removed: bool = False
    is_nsfw: bool = False

    @field_validator("creator_id", "broadcaster_id", "game_id", mode="before")
    @classmethod
    def _ids_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("broadcaster_name")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        # Every clip has a broadcaster; one that sanitises to nothing would embed a headless text.
        if not clips.sanitize(v):
            raise ValueError("must not be blank")
        return v

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        return v if v.tzinfo else v.replace(tzinfo=dt.UTC)

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can spell a lone surrogate (\\ud800); no UTF-8 database can store it.
            raise ValueError("contains an unpaired surrogate (invalid Unicode)") from None
        # PostgreSQL text cannot hold NUL; strip it rather than reject the clip.
        return v.replace("\x00", "")


COLUMNS = list(ClipRecord.model_fields)

UPSERT = clip_table.upsert_clips(COLUMNS)


@dataclasses.dataclass
class ImportReport:
    """Counts of one import; ``bad`` holds (line number, reason) for every rejected line."""

    lines: int = 0
    loaded: int = 0
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    mode: str = "rows"  # or "bulk" (clipembed.bulk.bulk_import)

    def reject(self, number: int, reason: str) -> None:
        self.bad.append((number, reason))
        logger.warning("bad row skipped", extra={"line": number, "reason": reason})


def parse_line(line: bytes | str) -> ClipRecord | str | None:
    """The record on one line, the reason it is bad, or None for a blank line."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not valid UTF-8 (byte {exc.start})"
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except ValueError as exc:
        return f"not valid JSON ({getattr(exc, 'msg', exc)})"
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    if not isinstance(data, dict):
        return "not a JSON object"
    try:
        return ClipRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(x) for x in first["loc"]) or "row"
        return f"{field}: {first['msg']}"


def parse_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, ClipRecord | str]]:
    """(line number, record) for good lines, (line number, reason) for bad ones; blanks skipped."""
    for number, line in enumerate(lines, start=1):
        item = parse_line(line)
        if item is not None:
            yield number, item


def row(record: ClipRecord, columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(record, c) for c in columns)


def read_records(
    path: Path, report: ImportReport, *, position: Callable[[int], None] | None = None
) -> Iterator[tuple[int, ClipRecord]]:
    """(line number, record) for every good line of ``path``; bad lines go to ``report``.

    ``position``: called with the bytes read so far of the file on disk (compressed bytes for
    a .gz), for a progress bar.
    """
    with path.open("rb") as raw:
        handle: BinaryIO = (
            cast(BinaryIO, gzip.GzipFile(fileobj=raw)) if path.name.endswith(".gz") else raw
        )
        lines = iter(handle)
        number = 0
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except (OSError, EOFError) as exc:  # a truncated or corrupt .gz: keep what was read
                report.reject(number + 1, f"file unreadable from here on ({exc})")
                break
            number += 1
            report.lines = number
            if position is not None and number % 1000 == 0:
                position(raw.tell())
            item = parse_line(line)
            if item is None:
                continue
            if isinstance(item, str):
                report.reject(number, item)
                continue
            yield number, item
        if position is not None:
            position(raw.tell())


async def upsert_rows(
    conn: psycopg.AsyncConnection[Any],
    upsert: sql.Composed,
    batch: Sequence[tuple[int, tuple[Any, ...]]],
    report: ImportReport,
) -> None:
    """One batch through ``upsert`` (``executemany``: one round trip); a batch the database
    rejects as a whole (a value our validation let through) is retried row by row, each in its
    own savepoint, so only the offending lines are reported and skipped."""
    if not batch:
        return
    try:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(upsert, [row for _, row in batch])
        report.loaded += len(batch)
    except ROW_ERRORS:
        async with conn.transaction(), conn.cursor() as cur:
            for number, row in batch:
                try:
                    async with conn.transaction():
                        await cur.execute(upsert, row)
                    report.loaded += 1
                except ROW_ERRORS as exc:
                    report.reject(number, f"rejected by the database: {first_line(exc)}")


async def import_file(
    conn: psycopg.AsyncConnection[Any], path: Path, *, target: source.Source | None = None
) -> ImportReport:
    """Upsert every good line of ``path`` row by row (batches of BATCH); returns the counts.

    ``target``: an adopted table (written itself; its clipembed_sync trigger brings each row
    into clipembed), else the owned ``clips``. Large files go through
    :mod:`clipembed.bulk.bulk_import` instead.
    """
    upsert, columns = UPSERT, COLUMNS
    if target is not None:
        upsert, columns = await adopted_upsert(conn, target)
    report = ImportReport(mode="rows")
    batch: list[tuple[int, tuple[Any, ...]]] = []
    for number, record in read_records(path, report):
        batch.append((number, row(record, columns)))
        if len(batch) >= BATCH:
            await upsert_rows(conn, upsert, batch, report)
            batch.clear()
    await upsert_rows(conn, upsert, batch, report)
    return report


async def adopted_upsert(
    conn: psycopg.AsyncConnection[Any], src: source.Source
) -> tuple[sql.Composed, list[str]]:
    """The upsert into an adopted table: the file's columns renamed by the mapping, those the
    table lacks left out; it needs the unique twitch_clip_id the file's rows are keyed by."""
    if src.twitch_clip_id is None:
        raise errors.SchemaError(
            f"{src.mapping.qualified} has no twitch_clip_id column: `clipembed import` upserts by "
            "it (load clips into an adopted table with the platform's own tools)"
        )
    cur = await conn.execute(source_queries.TABLE_COLUMNS, (src.mapping.schema, src.mapping.table))
    present = {name for name, _ in await cur.fetchall()}
    renamed = {canonical: src.mapping.column(field) for field, canonical in source.FIELDS.items()}
    columns = [c for c in COLUMNS if renamed.get(c, c) in present]
    upsert = clip_table.upsert_clips(
        [renamed.get(c, c) for c in columns],
        table=source_queries.table(src),
    )
    return upsert, columns


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
