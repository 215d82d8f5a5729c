"""The bulk import path gives what the row path (and its triggers) give, table by table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from clipembed import demo_data
from clipembed.bulk import bulk_import, importer
from tests.plugins.jobs import clip_record, write_jsonl
from tests.plugins.queue import clipembed_run

# What both paths must agree on, keyed by twitch_clip_id (the ids are each database's own).
STATE = {
    "clips": """SELECT twitch_clip_id, title, creator_name, broadcaster_name, game_name, language,
                       view_count, is_removed, is_nsfw, created_at, search_vector::text
                FROM clips ORDER BY twitch_clip_id""",
    "postings": """SELECT c.twitch_clip_id, p.lexeme, p.tf_a, p.tf_b, p.tf_c, p.tf_d,
                          p.len_a, p.len_b, p.len_c, p.len_d
                   FROM clip_postings p JOIN clips c ON c.id = p.doc_id ORDER BY 1, 2""",
    "doclen": """SELECT c.twitch_clip_id, l.len_a, l.len_b, l.len_c, l.len_d
                 FROM clip_doclen l JOIN clips c ON c.id = l.doc_id ORDER BY 1""",
    "queue": """SELECT c.twitch_clip_id, q.had_vector, q.attempts, q.in_batch
                FROM embedding_queue q JOIN clips c ON c.id = q.clip_id ORDER BY 1""",
    "dead": """SELECT c.twitch_clip_id FROM embedding_dead_letters d
               JOIN clips c ON c.id = d.clip_id ORDER BY 1""",
    "counters": """SELECT model, sum(live), sum(removed), sum(embedded) FROM clipembed_counters
                   GROUP BY model HAVING sum(live) + sum(removed) + sum(embedded) <> 0 ORDER BY 1""",
}


def state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in STATE.items()}  # type: ignore[arg-type]


async def load(url: str, path: Path, *, bulk: bool) -> importer.ImportReport:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        if bulk:  # small chunks: duplicates and edits fall on both sides of chunk boundaries,
            # three loading at once (a chunk naming a clip another still loads waits for it)
            return await bulk_import.import_file(
                conn,
                path,
                chunk_size=37,
                jobs=3,
                connect=lambda: psycopg.AsyncConnection.connect(url),
            )
        return await importer.import_file(conn, path)


def first_import() -> list[dict[str, Any]]:
    clips = list(demo_data.generate(300, seed=3))
    clips += [
        clip_record(1, title="神プレイ 🔥 ランク戦", language="ja"),
        clip_record(2, title="역대급 클러치", language="ko"),
        clip_record(3, title="removed from the start", is_removed=True),
        clip_record(4, title="", creator_name="", game_name=None),  # no lexeme at all
        clip_record(5, title="first of two lines"),
        clip_record(5, title="second of two lines wins"),  # the same clip twice in one file
    ]
    return clips


def second_import(first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    edited = [dict(c) for c in first[:120]]
    for i, clip in enumerate(edited):
        if i % 4 == 0:
            clip["title"] = clip["title"] + " (edited)"  # re-embed, re-index
        elif i % 4 == 1:
            clip["view_count"] = clip.get("view_count", 0) + 1000  # neither
        elif i % 4 == 2:
            clip["is_removed"] = True  # leaves the queue
        # i % 4 == 3: identical, writes nothing
    return [
        *edited,
        clip_record(3, title="removed from the start", is_removed=False),  # un-removed
        clip_record(6, title="new in the second file"),
        clip_record(2, title="역대급 클러치", language="en"),  # another analysis, same text
    ]


def settle(url: str) -> None:
    """What a worker would have done between imports: every queued clip embedded (a vector in
    clips.embedding), one clip dead-lettered. The second import must then re-queue exactly the
    edited ones, with had_vector, and clear the dead letter of an edited clip."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE clips SET embedding = array_fill(0.1, ARRAY[768])::vector, "
            "embedding_model = 'm' WHERE NOT is_removed"
        )
        conn.execute("DELETE FROM embedding_queue")
        conn.execute(
            "INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at) "
            "SELECT id, 5, 'x', now() FROM clips WHERE twitch_clip_id IN (%s, %s)",
            ("Clip1", demo_id(0)),
        )


def demo_id(i: int) -> str:
    return str(first_import()[i]["twitch_clip_id"])


async def test_bulk_path_gives_the_row_paths_tables(database_factory, tmp_path):
    rows_url, bulk_url = database_factory.new(), database_factory.new()
    first = first_import()
    a = write_jsonl(tmp_path / "a.jsonl", first)
    b = write_jsonl(tmp_path / "b.jsonl", second_import(first))

    for url, bulk in ((rows_url, False), (bulk_url, True)):
        report = await load(url, a, bulk=bulk)
        assert (report.loaded, report.bad) == (len(first), [])
    after_first = state(rows_url)
    assert state(bulk_url) == after_first
    assert len(after_first["queue"]) == len(first) - 2  # all live clips, clip 5 once
    assert after_first["postings"] and len(after_first["doclen"]) == len(first) - 1

    for url in (rows_url, bulk_url):
        settle(url)
        await load(url, b, bulk=url == bulk_url)
    after_second = state(rows_url)
    assert state(bulk_url) == after_second
    queued = {r[0] for r in after_second["queue"]}
    edited = {str(c["twitch_clip_id"]) for i, c in enumerate(first[:120]) if i % 4 == 0}
    # a new clip, an un-removed one and the edited titles; not the language change (Clip2:
    # re-analysed, same embedded text), view counts, removals or identical rows
    assert queued == edited | {"Clip3", "Clip6"}
    assert all(r[1] for r in after_second["queue"] if r[0] in edited)  # had a vector
    assert after_second["dead"] == [("Clip1",)]  # the edited clip left the dead letters
    clip2 = [r for r in after_second["clips"] if r[0] == "Clip2"]
    assert clip2 != [r for r in after_first["clips"] if r[0] == "Clip2"]  # re-analysed


async def test_a_chunk_the_database_rejects_is_loaded_row_by_row(database_url, tmp_path):
    with psycopg.connect(database_url) as conn:  # a rule our validation does not know
        conn.execute("ALTER TABLE clips ADD CONSTRAINT t_no_reject CHECK (title <> 'reject me')")
    records = [clip_record(i) for i in range(1, 60)]
    records[40] = clip_record(41, title="reject me")
    path = write_jsonl(tmp_path / "c.jsonl", ["{not json", *records])
    report = await load(database_url, path, bulk=True)
    assert report.loaded == 58
    assert [n for n, _ in report.bad] == [1, 42]
    assert "rejected by the database" in report.bad[1][1]
    got = state(database_url)
    assert len(got["clips"]) == len(got["queue"]) == len(got["doclen"]) == 58


async def test_bulk_transaction_setting_never_leaks_to_other_writes(database_url, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [clip_record(i) for i in range(1, 5)])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await bulk_import.import_file(conn, path)
        # the same session writes a clip afterwards: its triggers must run
        await conn.execute(
            "UPDATE clips SET title = 'after the import' WHERE twitch_clip_id = 'Clip1'"
        )
        await conn.commit()
    got = state(database_url)
    lexemes = {r[1] for r in got["postings"] if r[0] == "Clip1"}
    assert "import" in lexemes and "clutch" not in lexemes


def test_cli_chooses_the_path_and_says_which(queue_cli_env, tmp_path):
    cli_env = queue_cli_env
    path = write_jsonl(tmp_path / "e.jsonl", [clip_record(i) for i in range(1, 30)])
    done = clipembed_run(cli_env, "import", str(path), "--path", "bulk")
    assert done.returncode == 0, done.stderr
    assert "loaded 29 clips, 0 bad lines (bulk path)" in done.stdout
    again = clipembed_run(cli_env, "import", str(path))  # auto: a small file goes row by row
    assert "(rows path)" in again.stdout
    wrong = clipembed_run(cli_env, "import", str(path), "--path", "fast")
    assert wrong.returncode != 0 and "--path must be auto, bulk or rows" in wrong.stderr
