"""Issue 19's acceptance run: ``clipembed import`` of the real clips with no worker running, then
``clipembed backfill --via batch`` killed with SIGKILL twice and rerun, through a provider whose
Batch API fails 5 % of lines.

The fake provider runs in this process (its Files and Batch APIs, ``batch_mode=stepwise``: a
batch advances a few lines per poll, so the kills land mid-batch); the commands are the real CLI
in subprocesses. Kill 1 lands once a batch is at the provider, kill 2 once a batch's apply has
begun. Reported: clips holding their own text's vector, failed lines, texts resubmitted in later
batches, synchronous inputs, texts paid more than once.

    python -m bench.batch_after_import [--fail-rate 0.05]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import make_conninfo

from bench import common
from clipembed import clips
from clipembed.testing.fakeopenai import FakeOpenAI, expected_vector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch" / "clips.jsonl.gz"
CLIPEMBED = [sys.executable, "-m", "clipembed"]


def env_for(url: str, base_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDDING_", "OPENAI_"))}
    env.update(
        DATABASE_URL=url,
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY="sk-bench-0000000000000000",
        EMBEDDING_API_BASE_URL=base_url,
        REDIS_URL="none",
        EMBEDDING_REQUESTS_PER_MINUTE="100000",
        EMBEDDING_TOKENS_PER_MINUTE="100000000",
        EMBEDDING_BATCH_POLL_SECONDS="0.2",
        EMBEDDING_BATCH_API_MAX_INPUTS="1000",  # several batches for 3,504 clips
        CLIPEMBED_HOME=str(home),
    )
    return env


def one(url: str, statement: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(statement).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def run_until(env: dict[str, str], url: str, condition: str, timeout: float = 120) -> bool:
    """Start a backfill; SIGKILL it once ``condition`` (SQL, true/false) holds. False if it
    finished first."""
    proc = subprocess.Popen(
        [*CLIPEMBED, "backfill", "--via", "batch", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if one(url, condition):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise TimeoutError(condition)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail-rate", type=float, default=0.05)
    args = parser.parse_args()
    fake = FakeOpenAI(batch_fail_rate=args.fail_rate, batch_mode="stepwise", batch_lines_per_poll=3)
    fake.start()
    try:
        with common.postgres() as admin, __import__("tempfile").TemporaryDirectory() as tmp:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE DATABASE clips")
            url = make_conninfo(admin, dbname="clips")
            env = env_for(url, fake.base_url, Path(tmp))
            subprocess.run([*CLIPEMBED, "migrate", "up"], env=env, check=True, capture_output=True)
            started = time.perf_counter()
            out = subprocess.run(
                [*CLIPEMBED, "import", str(DATA)], env=env, check=True, capture_output=True
            )
            imported = one(url, "SELECT count(*) FROM clips")
            queued = one(url, "SELECT count(*) FROM embedding_queue")
            kills = 0
            kills += run_until(
                env, url, "SELECT count(*) > 0 FROM embedding_batches WHERE state <> 'planned'"
            )
            kills += run_until(
                env,
                url,
                "SELECT count(*) > 0 FROM embedding_batch_items WHERE state = 'applied'",
            )
            final = subprocess.run(
                [*CLIPEMBED, "backfill", "--via", "batch", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            seconds = time.perf_counter() - started
            with psycopg.connect(url) as conn:
                register_vector(conn)
                rows = conn.execute(
                    "SELECT title, broadcaster_name, creator_name, game_name, embedding"
                    " FROM clips WHERE NOT is_removed"
                ).fetchall()
                failed_lines = conn.execute(
                    "SELECT count(*) FROM embedding_batch_items WHERE state = 'failed'"
                ).fetchone()[0]
                resubmitted = conn.execute(
                    "SELECT count(*) FROM (SELECT clip_id FROM embedding_batch_items"
                    " GROUP BY clip_id HAVING count(*) > 1) t"
                ).fetchone()[0]
                dead = conn.execute("SELECT count(*) FROM embedding_dead_letters").fetchone()[0]
                left = conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0]
            right = 0
            for title, broadcaster, creator, game, embedding in rows:
                text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
                if embedding is not None and np.allclose(
                    embedding.to_numpy(), expected_vector(text, 768), atol=1e-6
                ):
                    right += 1
            stats = fake.stats()
    finally:
        fake.stop()
    common.save(
        "batch_after_import",
        {
            "command": f"python -m bench.batch_after_import --fail-rate {args.fail_rate}",
            "import_output": out.stdout.decode().strip().splitlines()[-1:],
            "clips": imported,
            "queued_by_import": queued,
            "kills": kills,
            "final_exit_code": final.returncode,
            "clips_with_their_own_vector": right,
            "clips_live": len(rows),
            "failed_lines": int(failed_lines),
            "texts_in_more_than_one_batch": int(resubmitted),
            "synchronous_inputs": stats["inputs"],
            "synchronous_requests": stats["requests"],
            "batches_created": stats["batches_created"],
            "texts_paid_more_than_once": stats["embedded_more_than_once"],
            "dead_letters": int(dead),
            "queue_left": int(left),
            "seconds": round(seconds, 1),
        },
    )


if __name__ == "__main__":
    main()
