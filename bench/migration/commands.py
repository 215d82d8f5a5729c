"""The real commands, timed (their stdout read as it comes), the queue drained, coverage counted, switches recorded."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import psycopg

from clipembed.db import priority


# --- the commands ------------------------------------------------------------------------------
def timed(args: list[str], env: dict[str, str], marker: str | None = None) -> dict[str, Any]:
    """Run ``clipembed <args>``; note when a stdout line matching ``marker`` appeared."""
    launched = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clipembed", *args],
            env={**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "250"},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdout is not None
        lines: list[str] = []
        marked: float | None = None
        match: re.Match[str] | None = None
        for line in proc.stdout:
            now = time.monotonic()
            lines.append(line.rstrip("\n"))
            if marker and marked is None and (m := re.search(marker, line)):
                marked, match = now, m
        code = proc.wait()
        returned = time.monotonic()
        err.seek(0)
        stderr = err.read()
    return {
        "args": args,
        "code": code,
        "stdout": lines,
        "stderr": stderr[-3000:],
        "launched": launched,
        "marked": marked,
        "match": match.groups() if match else None,
        "returned": returned,
        "seconds": round(returned - launched, 3),
    }


def must(result: dict[str, Any]) -> dict[str, Any]:
    if result["code"] != 0:
        raise RuntimeError(
            f"clipembed {' '.join(result['args'])} exited {result['code']}:\n"
            + "\n".join(result["stdout"][-20:])
            + "\n"
            + result["stderr"]
        )
    return result


def queue_length(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0])  # type: ignore[index]


def drain(url: str, deadline_s: float) -> dict[str, Any]:
    """Wait until the worker has embedded everything queued before now.

    The queue refills at the insert rate (at 10 inserts/s it holds 1-4 fresh clips most of the
    time), so "empty" is the wrong test: no item older than this call must be left.
    """
    t = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        cutoff = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        longest = 0
        while True:
            old, now = conn.execute(
                "SELECT count(*) FILTER (WHERE enqueued_at <= %s), count(*) FROM embedding_queue",
                (cutoff,),
            ).fetchone()  # type: ignore[misc]
            longest = max(longest, now)
            if old == 0:
                return {
                    "caught_up": True,
                    "seconds": round(time.monotonic() - t, 2),
                    "queue_now": now,
                    "max_seen": longest,
                }
            if time.monotonic() - t > deadline_s:
                return {"caught_up": False, "seconds": round(time.monotonic() - t, 2), "left": old}
            time.sleep(0.05)


def coverage_sql(url: str, table: str) -> dict[str, int]:
    """Live clips without a vector in ``table``, and those of them not waiting in the queue."""
    with psycopg.connect(url, autocommit=True) as conn:
        # the benchmark's own reads of both spaces, whole: at bulk work's priority, so that they
        # are not counted against the migration (16 failed searches fell in their window once)
        priority.lower_priority(conn.info, priority.BUILD_NICE)
        row = conn.execute(
            f"SELECT count(*) FILTER (WHERE e.clip_id IS NULL),"
            f" count(*) FILTER (WHERE e.clip_id IS NULL AND q.clip_id IS NULL), count(*)"
            f" FROM clips c LEFT JOIN {table} e ON e.clip_id = c.id"
            f" LEFT JOIN embedding_queue q ON q.clip_id = c.id WHERE NOT c.is_removed"
        ).fetchone()
    assert row is not None
    return {"missing": row[0], "missing_not_queued": row[1], "live": row[2]}


def switch(
    args: list[str], env: dict[str, str], marker: str, *, attempts: int, url: str
) -> dict[str, Any] | None:
    """Promote/rollback; a promote refused (a clip inserted a moment ago has no vector yet) is
    retried ``attempts`` times in all, each refusal recorded. None: refused every time."""
    refusals: list[dict[str, Any]] = []
    for _ in range(attempts):
        r = timed(args, env, marker)
        if r["code"] == 0:
            r["refusals"] = refusals
            return r
        refused = re.search(r"error: (\d+) live clips have no vector", r["stderr"])
        if refused is None:
            must(r)  # another failure: raises
            raise AssertionError(r)
        # right after the refusal (the command has exited: a second or so after its check)
        refusals.append(
            {
                "missing_said": int(refused.group(1)),
                "command_s": r["seconds"],
                "after": {n: coverage_sql(url, t) for n, t in SPACE_TABLES.items()},
            }
        )
        time.sleep(0.2)
    REFUSALS.extend(refusals)
    return None


REFUSALS: list[dict[str, Any]] = []
SPACE_TABLES: dict[str, str] = {}  # name -> table, filled once the candidate exists
