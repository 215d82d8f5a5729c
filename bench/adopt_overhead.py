"""What clipembed's triggers cost Clipper's hottest write: ``UPDATE clips SET view_count = ...``.

A Clipper-shaped database (tests/fixtures/clipper/schema.sql: Clipper's own search and vote-count
triggers included) with synthetic clips; pgbench sends single-row view-count updates as
prepared statements (as pgx does) from 4 clients, and a whole-table update is timed. Rounds
alternate without and with clipembed installed (``migrate up`` adopts the table; ``migrate down
--to 0`` removes it), so drift on this shared machine falls on both sides. Result: the ratio
of throughputs with / without (issue 17's target: >= 0.9).

    python -m bench.adopt_overhead [--clips 50000] [--seconds 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from bench import common
from clipembed import pgembed
from clipembed.db import connection, migrations

SCHEMA = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clipper" / "schema.sql"

FILL = """
INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title, creator_name,
    broadcaster_name, game_name, language, view_count, created_at)
SELECT 'c' || i, 'https://clips.twitch.tv/c' || i, 'https://clips.twitch.tv/embed?clip=c' || i,
       'clip title number ' || i || ' ガチャ', 'creator ' || (i % 500), 'streamer ' || (i % 200),
       'game ' || (i % 50), CASE WHEN i % 3 = 0 THEN 'ja' ELSE 'en' END, i % 1000,
       now() - (i || ' minutes')::interval
FROM generate_series(1, %s) AS i
"""


def pgbench(url: str, clips: int, seconds: int, script: Path) -> float:
    script.write_text(
        f"\\set n random(1, {clips})\n"
        "UPDATE clips SET view_count = view_count + 1 WHERE twitch_clip_id = 'c' || :n;\n"
    )
    out = subprocess.run(
        [
            str(pgembed.bin_dir() / "pgbench"),
            "-n",
            "-M",
            "prepared",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"tps = ([0-9.]+)", out.stdout)
    assert match, out.stdout + out.stderr
    return float(match.group(1))


def bulk(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("UPDATE clips SET view_count = view_count + 1")
        return time.perf_counter() - started


async def install(url: str, on: bool) -> None:
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        if on:
            await migrations.up(conn, dimensions=768)
        else:
            await migrations.down(conn, to=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, float | str]] = []
    with common.postgres() as admin, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE clipper")
        url = make_conninfo(admin, dbname="clipper")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA.read_text("utf-8"))
            conn.execute(FILL, (args.clips,))
            conn.execute("VACUUM ANALYZE clips")
        script = Path(tmp) / "views.sql"
        for _ in range(args.rounds):
            for installed in (False, True):
                asyncio.run(install(url, installed))
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE clips")
                tps = pgbench(url, args.clips, args.seconds, script)
                seconds = bulk(url)
                rounds.append(
                    {
                        "clipembed": "installed" if installed else "absent",
                        "single_row_tps": tps,
                        "whole_table_seconds": round(seconds, 3),
                    }
                )
                print(rounds[-1], flush=True)
    without = [float(r["single_row_tps"]) for r in rounds if r["clipembed"] == "absent"]
    with_ = [float(r["single_row_tps"]) for r in rounds if r["clipembed"] == "installed"]
    bulk_without = [float(r["whole_table_seconds"]) for r in rounds if r["clipembed"] == "absent"]
    bulk_with = [float(r["whole_table_seconds"]) for r in rounds if r["clipembed"] == "installed"]
    common.save(
        "adopt_overhead",
        {
            "command": "python -m bench.adopt_overhead "
            f"--clips {args.clips} --seconds {args.seconds} --rounds {args.rounds}",
            "clips": args.clips,
            "rounds": rounds,
            "single_row_tps_median": {
                "absent": statistics.median(without),
                "installed": statistics.median(with_),
                "ratio": round(statistics.median(with_) / statistics.median(without), 3),
            },
            "whole_table_seconds_median": {
                "absent": statistics.median(bulk_without),
                "installed": statistics.median(bulk_with),
                "ratio": round(statistics.median(bulk_without) / statistics.median(bulk_with), 3),
            },
        },
    )


if __name__ == "__main__":
    main()
