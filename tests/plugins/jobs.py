"""Fixtures for the batch jobs (import, backfill, scheduler, stats, the API app).

``jobs_runtime`` is a real Runtime on a fresh migrated database (768 dims) with the fake OpenAI
server behind it and this test's Redis prefix; ``clip_record`` builds one importable clip and
``load_clips`` upserts records through the real importer.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clipembed import runtime


def clip_record(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid clip in the import format; ``i`` makes its id (and by default its title) unique."""
    record: dict[str, Any] = {
        "twitch_clip_id": f"Clip{i}",
        "twitch_clip_url": f"https://clips.twitch.tv/Clip{i}",
        "embed_url": f"https://clips.twitch.tv/embed?clip=Clip{i}",
        "title": f"clutch play number {i}",
        "creator_name": f"viewer{i % 7}",
        "broadcaster_name": f"streamer{i % 5}",
        "game_name": "VALORANT",
        "created_at": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=i)).isoformat(),
    }
    record.update(overrides)
    return record


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | str]) -> Path:
    """One line per record (a str is written as is, to make bad lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def load_clips(database_url: str, records: Iterable[dict[str, Any]], tmp: Path) -> None:
    from clipembed.bulk import importer

    path = write_jsonl(tmp / "load.jsonl", records)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        report = await importer.import_file(conn, path)
    assert not report.bad, report.bad


@pytest.fixture
async def jobs_runtime(openai_settings, database_url):
    cfg = openai_settings(database_url=database_url)
    async with runtime.open_runtime(cfg) as rt:
        yield rt
