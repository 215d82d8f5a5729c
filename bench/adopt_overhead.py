"""What clipembed's triggers cost Clipper's hottest write: ``UPDATE clips SET view_count = ...``.

A Clipper-shaped database (tests/fixtures/clipper/schema.sql: Clipper's own search and vote-count
triggers included) with synthetic clips, adopted by ``migrate up``; pgbench sends single-row
view-count updates as prepared statements (as pgx does) from 4 clients, and a whole-table update
is timed. Rounds alternate with clipembed's trigger enabled and disabled (the one thing
clipembed adds to the table's write path), so drift on this shared machine falls on both sides;
the whole-table update also runs under EXPLAIN ANALYZE, whose per-trigger times compare the
trigger with the statement it ran in. Result: the ratios with / without (issue 17's target:
>= 0.9).

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
       'clip title number ' || i || ' ガチャ', 'creator ' || (i %% 500), 'streamer ' || (i %% 200),
       'game ' || (i %% 50), CASE WHEN i %% 3 = 0 THEN 'ja' ELSE 'en' END, i %% 1000,
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


def trigger_share(url: str) -> dict[str, object]:
    """The whole-table update under EXPLAIN ANALYZE: each trigger's own time, measured in the
    same statement as the total, so the machine's noise falls on both alike."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE clips SET view_count = view_count + 1"
        ).fetchone()
        assert row is not None
        plan = row[0]
        conn.rollback()
    top = plan[0]
    total = float(top["Execution Time"])
    triggers = {t["Trigger Name"]: float(t["Time"]) for t in top.get("Triggers", [])}
    ours = sum(ms for name, ms in triggers.items() if name.startswith("clipembed_"))
    return {
        "total_ms": round(total, 1),
        "clipembed_triggers_ms": round(ours, 1),
        "ratio_without_over_with": round((total - ours) / total, 3) if total else 1.0,
        "triggers_ms": {k: round(v, 1) for k, v in triggers.items()},
    }


async def install(url: str, on: bool) -> None:
    conn = await connection.connect(url, autocommit=True)
    async with conn:
        if on:
            await migrations.up(conn, dimensions=768)
        else:
            await migrations.down(conn, to=0)


def toggle(url: str, on: bool) -> None:
    """clipembed's row trigger on or off (the bench's own database: only to measure it)."""
    verb = "ENABLE" if on else "DISABLE"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE clips {verb} TRIGGER clipembed_sync")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=50_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, object]] = []
    with common.postgres() as admin, tempfile.TemporaryDirectory() as tmp:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE clipper")
        url = make_conninfo(admin, dbname="clipper")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA.read_text("utf-8"))
            conn.execute(FILL, (args.clips,))
        # installed once; rounds then alternate with its trigger enabled and disabled, so the
        # two sides differ by the trigger alone (not by a fresh copy's autovacuum, checkpoints)
        asyncio.run(install(url, True))
        script = Path(tmp) / "views.sql"
        for _ in range(args.rounds):
            for installed in (False, True):
                toggle(url, installed)
                tps = pgbench(url, args.clips, args.seconds, script)
                seconds = bulk(url)
                rounds.append(
                    {
                        "clipembed": "installed" if installed else "absent",
                        "single_row_tps": tps,
                        "whole_table_seconds": round(seconds, 3),
                        **({"explain": trigger_share(url)} if installed else {}),
                    }
                )
                print(rounds[-1], flush=True)
        toggle(url, True)

    def figures(key: str, state: str) -> list[float]:
        return [float(r[key]) for r in rounds if r["clipembed"] == state]  # type: ignore[arg-type]

    without, with_ = figures("single_row_tps", "absent"), figures("single_row_tps", "installed")
    bulk_without = figures("whole_table_seconds", "absent")
    bulk_with = figures("whole_table_seconds", "installed")
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
            "trigger_time_ratio_median": statistics.median(
                float(r["explain"]["ratio_without_over_with"])  # type: ignore[index]
                for r in rounds
                if "explain" in r
            ),
            "whole_table_seconds_median": {
                "absent": statistics.median(bulk_without),
                "installed": statistics.median(bulk_with),
                "ratio": round(statistics.median(bulk_without) / statistics.median(bulk_with), 3),
            },
        },
    )


if __name__ == "__main__":
    main()
