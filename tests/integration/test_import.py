"""The importer against a real database: upserts, bad lines, gzip, re-imports."""

from __future__ import annotations

import gzip
import json

import psycopg

from clipembed.bulk import importer
from tests.plugins.jobs import clip_record, write_jsonl


async def run_import(database_url, path):
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await importer.import_file(conn, path)


def rows(database_url, sql="SELECT twitch_clip_id, title FROM clips ORDER BY twitch_clip_id"):
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql).fetchall()


async def test_good_rows_load_bad_rows_are_reported_with_their_line(database_url, tmp_path):
    path = write_jsonl(
        tmp_path / "clips.jsonl",
        [
            clip_record(1),
            "{broken",
            clip_record(2, title="神プレイ 🔥"),
            clip_record(3, title="x" * 300),
            json.dumps(clip_record(4, title="\ud800")),  # ASCII-escaped, as JSON allows
            clip_record(5),
        ],
    )
    report = await run_import(database_url, path)
    assert report.loaded == 3
    assert [n for n, _ in report.bad] == [2, 4, 5]
    assert "title" in report.bad[1][1] and "surrogate" in report.bad[2][1]
    assert rows(database_url) == [
        ("Clip1", "clutch play number 1"),
        ("Clip2", "神プレイ 🔥"),
        ("Clip5", "clutch play number 5"),
    ]


async def test_upsert_by_twitch_clip_id_updates_and_keeps_the_row(database_url, tmp_path):
    await run_import(database_url, write_jsonl(tmp_path / "a.jsonl", [clip_record(1)]))
    (before,) = rows(database_url, "SELECT id FROM clips")
    report = await run_import(
        database_url,
        write_jsonl(tmp_path / "b.jsonl", [clip_record(1, title="renamed", view_count=9)]),
    )
    assert report.loaded == 1 and not report.bad
    assert rows(database_url, "SELECT id, title, view_count FROM clips") == [
        (before[0], "renamed", 9)
    ]


async def test_reimporting_the_same_file_writes_nothing(database_url, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [clip_record(i) for i in range(20)])
    await run_import(database_url, path)
    xmin_before = rows(database_url, "SELECT xmin::text FROM clips ORDER BY id")
    report = await run_import(database_url, path)
    xmin_after = rows(database_url, "SELECT xmin::text FROM clips ORDER BY id")
    assert report.loaded == 20
    assert xmin_after == xmin_before  # no row version was written


async def test_gzip_and_invalid_utf8_lines(database_url, tmp_path):
    path = tmp_path / "clips.jsonl.gz"
    good = json.dumps(clip_record(1), ensure_ascii=False).encode()
    bad = json.dumps(clip_record(2)).encode().replace(b"clutch", b"\xff\xfe")
    with gzip.open(path, "wb") as fh:
        fh.write(good + b"\n" + bad + b"\n" + json.dumps(clip_record(3)).encode() + b"\n")
    report = await run_import(database_url, path)
    assert report.loaded == 2 and report.bad[0][0] == 2 and "UTF-8" in report.bad[0][1]


async def test_truncated_gzip_keeps_what_was_read_and_reports_the_rest(database_url, tmp_path):
    full = tmp_path / "full.jsonl.gz"
    with gzip.open(full, "wt", encoding="utf-8") as fh:
        for i in range(2000):
            fh.write(json.dumps(clip_record(i)) + "\n")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    report = await run_import(database_url, cut)
    assert report.bad and "unreadable" in report.bad[-1][1]
    assert 0 < report.loaded < 2000
    assert rows(database_url, "SELECT count(*) FROM clips")[0][0] == report.loaded


async def test_a_batch_the_database_rejects_is_retried_row_by_row(
    database_url, tmp_path, monkeypatch
):
    # A value our validation lets through but the database refuses (here a site's own CHECK
    # constraint): only that line is reported; the rest of its batch still loads.
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE clips ADD CONSTRAINT site_rule CHECK (title <> 'forbidden')")
    monkeypatch.setattr(importer, "BATCH", 10)
    records = [clip_record(i) for i in range(25)]
    records[6]["title"] = "forbidden"
    report = await run_import(database_url, write_jsonl(tmp_path / "a.jsonl", records))
    assert report.bad == [(7, report.bad[0][1])] and "rejected by the database" in report.bad[0][1]
    assert "site_rule" in report.bad[0][1]
    assert report.loaded == 24
    assert rows(database_url, "SELECT count(*) FROM clips")[0][0] == 24
