"""Bring your own vectors: fill a space from a file, without any provider call.

``clipembed import --vectors FILE --space NAME`` reads JSON Lines (optionally gzipped) or
Parquet rows holding ``clip_id`` (our uuid) or ``twitch_clip_id``, and ``vector`` (a list of
numbers). Every row is checked before anything is written: the key must name an existing,
live clip; the vector must have the space's dimensions, hold only finite numbers (and, for
``halfvec`` storage, numbers within half precision's range) and not be all zeros (a cosine
distance to it is undefined). A bad row is reported with its line number (1-based; for
Parquet, the row number) and the reason, and skipped: the good rows are still imported.

An imported vector is stored with the content hash of the clip's *current* text under the
space's model, i.e. it is taken to embed that text with that model: clipembed then keeps it
current like any other (an edit of the clip re-embeds it through the space's provider).
Writes go through :func:`clipembed.bulk.pipeline.write_batch`, so a clip edited while the
import runs keeps its queued re-embedding instead of the imported vector.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from clipembed import errors
from clipembed.bulk import index_policy, pipeline
from clipembed.spaces.registry import Space
from clipembed.store import space_table

CHUNK = 1000
HALF_MAX = 65504.0  # the largest finite half-precision number
MAX_REPORTED = 1000  # bad rows kept in the report (all are counted)

#: Live clips by our id or Twitch's (``%s``: uuid[], text[]).
RESOLVE = """
SELECT id, twitch_clip_id, title, broadcaster_name, creator_name, game_name, is_removed
FROM clips WHERE id = ANY(%s::uuid[]) OR twitch_clip_id = ANY(%s::text[])
"""


class VectorFileError(errors.ClipembedError):
    """The file cannot be read at all (missing, unknown format, Parquet without pyarrow)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    line: int
    clip_id: uuid.UUID | None
    twitch_clip_id: str | None
    vector: np.ndarray


@dataclasses.dataclass
class ImportReport:
    space: str
    read: int = 0
    imported: int = 0
    superseded: int = 0  # the clip was edited while importing: its re-embedding is queued
    duplicates: int = 0  # a later line for the same clip replaced an earlier one
    bad_count: int = 0
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    index_rebuilt: bool = False

    def reject(self, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < MAX_REPORTED:
            self.bad.append((line, reason))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["bad"] = [{"line": n, "reason": r} for n, r in self.bad]
        return out


def check_vector(value: Any, *, dimensions: int, storage: str) -> np.ndarray:
    """The vector as float32, or ValueError saying what is wrong with it (pure).

    Checked in the precision it will be stored in: a value that becomes infinite in float32
    (or beyond 65504 in half precision), or a vector that rounds to all zeros there, is refused.
    """
    if not isinstance(value, list | tuple | np.ndarray):
        raise ValueError("'vector' must be a list of numbers")
    if len(value) != dimensions:
        raise ValueError(f"the vector has {len(value)} dimensions, the space {dimensions}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            raise ValueError("'vector' holds something that is not a number")
    try:
        wide = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("'vector' holds a number too large for any float") from None
    if not np.all(np.isfinite(wide)):
        raise ValueError("the vector holds NaN or infinity")
    with np.errstate(over="ignore"):
        arr = wide.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("a value is beyond single precision's range (3.4e38)")
    stored = arr
    if storage == "halfvec":
        if float(np.max(np.abs(arr))) > HALF_MAX:
            raise ValueError("a value is beyond half precision's range (65504): use vector storage")
        stored = arr.astype(np.float16)
    if not np.any(stored):
        raise ValueError(
            "the vector is all zeros in its storage precision "
            "(no direction: cosine distance is undefined)"
        )
    return arr


def parse_record(line: int, record: Any, *, dimensions: int, storage: str) -> Row:
    """One decoded row, validated (pure); ValueError with the reason when it is bad."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    raw_id, raw_twitch = record.get("clip_id"), record.get("twitch_clip_id")
    clip_id: uuid.UUID | None = None
    twitch: str | None = None
    if raw_id not in (None, ""):
        try:
            clip_id = uuid.UUID(str(raw_id))
        except ValueError:
            raise ValueError(f"clip_id {str(raw_id)[:60]!r} is not a uuid") from None
    elif isinstance(raw_twitch, str) and raw_twitch.strip():
        twitch = raw_twitch.strip()
    else:
        raise ValueError("neither clip_id nor twitch_clip_id")
    if "vector" not in record:
        raise ValueError("no 'vector'")
    vector = check_vector(record["vector"], dimensions=dimensions, storage=storage)
    return Row(line, clip_id, twitch, vector)


def read_records(path: Path) -> Iterator[tuple[int, Any | ValueError]]:
    """(line number, decoded record or the reason it could not be decoded), in file order."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _parquet(path)
        return
    if not name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        raise VectorFileError(f"{path.name}: use .jsonl, .jsonl.gz or .parquet")
    opener: Any = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="strict") as fh:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    yield number, json.loads(text)
                except ValueError as exc:
                    yield number, ValueError(f"not JSON ({str(exc)[:80]})")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise VectorFileError(f"{path.name}: cannot be read ({exc})") from None


def _parquet(path: Path) -> Iterator[tuple[int, Any | ValueError]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise VectorFileError(
            "reading Parquet needs pyarrow: pip install 'clipembed[parquet]'"
        ) from None
    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for broken files
        raise VectorFileError(f"{path.name}: not a readable Parquet file ({exc})") from None
    number = 0
    for batch in reader.iter_batches(batch_size=CHUNK):
        for record in batch.to_pylist():
            number += 1
            yield number, record


async def import_vectors(
    pool: AsyncConnectionPool,
    path: Path,
    *,
    space: Space,
    model: str,
    index: str = "auto",
    build: space_table.IndexBuild = space_table.DEFAULT_BUILD,
) -> ImportReport:
    """Import a file's vectors into ``space``; returns what was imported and what was bad.

    ``model``: the space's model (the default space's is the configured one). ``index``:
    ``auto`` drops the index of a space that is not active and builds it once at the
    end (cheaper than maintaining it row by row); the active space keeps its index, unless it
    is an IVFFlat index the table has outgrown (``index_policy.ivfflat_outgrown``).
    """
    report = ImportReport(space.name)
    rebuild = index == "rebuild" or (index == "auto" and not space.active)
    if rebuild and await index_policy.index_exists(pool, space):
        await index_policy.drop_index(pool, space)
    try:
        chunk: list[Row] = []
        for number, record in read_records(path):
            report.read += 1
            if isinstance(record, ValueError):
                report.reject(number, str(record))
                continue
            try:
                chunk.append(
                    parse_record(number, record, dimensions=space.dimensions, storage=space.storage)
                )
            except ValueError as exc:
                report.reject(number, str(exc))
                continue
            if len(chunk) >= CHUNK:
                await _write(pool, chunk, space=space, model=model, report=report)
                chunk = []
        if chunk:
            await _write(pool, chunk, space=space, model=model, report=report)
    finally:
        if rebuild:
            await index_policy.rebuild_index(pool, space, build=build)
            report.index_rebuilt = True
    if not rebuild and index != "keep" and await index_policy.ivfflat_outgrown(pool, space):
        await index_policy.rebuild_index(pool, space, build=build)
        report.index_rebuilt = True
    report.bad.sort()  # unknown clips are found a chunk later than malformed lines
    return report


async def _write(
    pool: AsyncConnectionPool,
    rows: list[Row],
    *,
    space: Space,
    model: str,
    report: ImportReport,
) -> None:
    ids = [r.clip_id for r in rows if r.clip_id is not None]
    twitch = [r.twitch_clip_id for r in rows if r.twitch_clip_id is not None]
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(RESOLVE, (ids, twitch))
        found = await cur.fetchall()
    by_id = {r["id"]: r for r in found}
    by_twitch = {r["twitch_clip_id"]: r for r in found}
    chosen: dict[Any, tuple[pipeline.Pending, np.ndarray]] = {}
    for row in rows:
        clip = by_id.get(row.clip_id) if row.clip_id else by_twitch.get(row.twitch_clip_id)
        if clip is None:
            key = (
                f"clip_id {row.clip_id}"
                if row.clip_id
                else f"twitch_clip_id {row.twitch_clip_id!r}"
            )
            report.reject(row.line, f"no clip with {key[:120]}")
            continue
        if clip["is_removed"]:
            report.reject(row.line, "the clip is removed")
            continue
        if clip["id"] in chosen:
            report.duplicates += 1
        item = pipeline.Pending.from_row(clip, model=model, dimensions=space.dimensions)
        chosen[clip["id"]] = (item, row.vector)
    if not chosen:
        return
    items = [p for p, _ in chosen.values()]
    vectors = [v for _, v in chosen.values()]
    written = await pipeline.write_batch(
        pool, items, vectors, space=space, model=model, dimensions=space.dimensions, force=True
    )
    report.imported += written
    report.superseded += len(items) - written
