"""A full model migration under load: add, backfill, promote, roll back while search and inserts run.

The issue's target: "A full migration of 100,000 clips from one model to another while 20
searches/s and 10 inserts/s run: 0 failed searches, 0 searches answered from two spaces at once,
the candidate space covers every clip (including those inserted during the migration) when
promote runs, promote and rollback each take effect in under 1 s."

Setup (timed, not the measurement): a private PostgreSQL, N generated clips imported with
``clipembed import`` and embedded into the ``default`` space (768 dimensions,
text-embedding-3-small) by ``clipembed backfill`` against the fake provider (its vectors are
``expected_vector(text, dims)``), the queue emptied.

Then ``clipembed serve`` and one ``clipembed worker`` (subprocesses) and, for the whole
migration, a load generator in this process (open loop, on fixed schedules; a minimal HTTP
client, so that it costs ~0.05 core): ``--search-rate`` searches/s over HTTP (half hybrid, half
semantic; one or two words of the clip titles) and ``--insert-rate`` plain INSERTs of new clips
through psycopg (4 connections sharing the schedule). Meanwhile, with the real commands:

1. ``clipembed model add cand --provider openai --model text-embedding-3-large --dimensions 256
   --storage halfvec``;
2. ``clipembed model backfill cand --json`` (timed, its summary kept);
3. the worker caught up (nothing queued before that moment is left: under 10 inserts/s the
   queue is never empty for long), ``clipembed model list --json`` and the same counts in SQL,
   split into clips that are waiting in the queue and clips that are not;
4. ``clipembed model promote cand``. It refuses while any live clip lacks a vector in the
   candidate, and under a steady insert rate there are always a few clips inserted a moment
   ago that no space has yet (the active one neither): after ``--promote-attempts`` refusals
   (each recorded), if every clip the candidate lacks is one waiting in the queue, the
   benchmark runs ``promote --force``, as an operator would. Then ~``--hold`` s of load,
   ``clipembed model rollback``, ~``--hold`` s of load.

Every search is recorded (status, latency, the space its response names, the semantic scores of
its hits). Afterwards each semantic score is checked against the space the response names: it
must equal the cosine between ``expected_vector(query, that space's dimensions)`` (rounded to
half precision for a halfvec space) and the clip's vector read back from that space's table.
A search that embedded its query in one space and searched another's vectors cannot pass this
(different dimensions and vectors); that is the "answered from exactly one space" check. A
control (the same hits scored with another query's vector) shows the check can fail. Each
response's space must also be one that was active at some moment of the request (a switch
committed between its command's start and the moment the command printed so).

"Takes effect": from the moment the promote (rollback) command prints that it committed the
pointer (its stdout, unbuffered) to the first search response naming the new space; requests
sent after that moment and answered from the old space are counted (target: none). The
commands then copy the active space into ``clips.embedding`` (the mirror sync), timed
separately. Every clip inserted during the run is checked afterwards in both spaces: vector
equal to the fake's for its text, content hash right. CPU use per component (and what the
rest of the machine used meanwhile: this machine is shared) is recorded.

    python -m bench.model_migration [--clips 100000] [--search-rate 20] [--insert-rate 10]

The phases live in bench/migration/: load.py (the load generator), commands.py (the timed
commands, drain, coverage), cpu.py, analysis.py (the checks after the run) and report.py (the
results file); this module sets up, runs the migration in order and saves.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import common
from bench.migration import report
from bench.migration.analysis import (
    check_scores,
    verify_inserted,
)
from bench.migration.commands import (
    REFUSALS,
    SPACE_TABLES,
    coverage_sql,
    drain,
    must,
    switch,
    timed,
)
from bench.migration.constants import (
    CAND,
    CAND_DIMS,
    CAND_MODEL,
    CAND_STORAGE,
    DEFAULT_DIMS,
    KEY,
    STOP,
    WORD,
)
from bench.migration.cpu import Cpu
from bench.migration.load import Load
from clipembed import demo_data
from clipembed.db import migrations
from clipembed.testing import servers


# --- setup -------------------------------------------------------------------------------------
def make_file(directory: Path, count: int) -> tuple[Path, list[str]]:
    """The clips as an import file, and the ASCII words of their titles and games (queries)."""
    path = directory / f"clips-{count}.jsonl.gz"
    words: dict[str, None] = {}
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for clip in demo_data.generate(count, seed=1):
            fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
            for w in f"{clip['title']} {clip['game_name'] or ''}".lower().split():
                w = w.strip("!?.,:;'\"()")
                if WORD.match(w) and w not in STOP:
                    words.setdefault(w, None)
    return path, sorted(words)


def setup(url: str, tmp: Path, clips: int, env: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    started = time.monotonic()

    async def migrate() -> None:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        async with conn:
            await migrations.up(conn, dimensions=DEFAULT_DIMS)

    asyncio.run(migrate())
    data, words = make_file(tmp, clips)
    _, import_s, _ = common.clipembed("import", str(data), env_vars=env)
    out, backfill_s, _ = common.clipembed(
        "backfill", "--batch", "100", "--concurrency", "8", "--json", env_vars=env
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM embedding_queue")
        conn.execute("VACUUM ANALYZE")
        live, embedded = conn.execute(
            "SELECT (SELECT count(*) FROM clips WHERE NOT is_removed),"
            " (SELECT count(*) FROM embeddings_space_1)"
        ).fetchone()  # type: ignore[misc]
    assert embedded == live == clips, (live, embedded, summary)
    return {
        "import_s": round(import_s, 1),
        "default_backfill_s": round(backfill_s, 1),
        "default_backfill_failed": summary["failed"],
        "total_s": round(time.monotonic() - started, 1),
    }, words


# --- the run -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--search-rate", type=float, default=20.0)
    parser.add_argument("--insert-rate", type=float, default=10.0)
    parser.add_argument("--provider-ms", type=float, default=50.0, help="the fake's latency")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of load per phase")
    parser.add_argument(
        "--backfill-rpm",
        type=int,
        default=0,
        help="EMBEDDING_REQUESTS_PER_MINUTE for the candidate's backfill only (0: unlimited)",
    )
    parser.add_argument(
        "--promote-attempts",
        type=int,
        default=5,
        help="promotes without --force before checking coverage here and forcing",
    )
    parser.add_argument(
        "--search-target-ms",
        type=int,
        default=None,
        help="CLIPEMBED_BACKFILL_SEARCH_TARGET_MS for the backfill (default: the setting's, 200;"
        " 0: the adaptive pace off)",
    )
    parser.add_argument("--name", default="model_migration")
    parser.add_argument("--raw", type=Path, help="also write every search record here (JSON)")
    args = parser.parse_args()
    command = "python -m bench.model_migration " + " ".join(sys.argv[1:])
    wall = time.monotonic()

    with (
        common.postgres() as url,
        common.fake_provider("--latency-ms", str(args.provider_ms)) as fake,
        tempfile.TemporaryDirectory() as tmp_s,
    ):
        tmp = Path(tmp_s)
        env = common.env(
            DATABASE_URL=url,
            EMBEDDING_PROVIDER="openai",
            OPENAI_API_KEY=KEY,
            EMBEDDING_API_BASE_URL=fake,
            EMBEDDING_MODEL="text-embedding-3-small",
            EMBEDDING_DIMENSIONS=str(DEFAULT_DIMS),
            REDIS_URL="none",  # no shared Redis: nothing of this run outlives it
            EMBEDDING_REQUESTS_PER_MINUTE="1000000",
            EMBEDDING_TOKENS_PER_MINUTE="1000000000",
            EMBEDDING_TIMEOUT_SECONDS="10",
            CLIPEMBED_HOME=str(tmp),
            CLIPEMBED_LOG_LEVEL="WARNING",
            # one load generator is one client address: the per-client search limits are off
            CLIPEMBED_SEARCH_REQUESTS_PER_SECOND="0",
            CLIPEMBED_SEARCH_EMBEDS_PER_MINUTE="0",
        )
        print(f"setting up {args.clips} clips...", flush=True)
        prepared, words = setup(url, tmp, args.clips, env)
        print(f"setup: {prepared}", flush=True)

        port = servers.free_port()
        logs = {n: open(tmp / f"{n}.log", "w+") for n in ("serve", "worker")}  # noqa: SIM115
        serve = subprocess.Popen(
            [sys.executable, "-m", "clipembed", "serve", "--port", str(port)],
            env=env,
            stdout=logs["serve"],
            stderr=subprocess.STDOUT,
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "clipembed", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=logs["worker"],
            text=True,
        )
        procs: dict[str, subprocess.Popen[Any]] = {"serve": serve, "worker": worker}
        cpu = Cpu(url, {n: p.pid for n, p in procs.items()})
        snaps: dict[str, dict[str, float]] = {}
        marks: dict[str, float] = {}
        steps: dict[str, Any] = {}
        switches: list[dict[str, Any]] = []
        load: Load | None = None
        completed = False
        try:
            deadline = time.monotonic() + 120
            while not servers.port_open("127.0.0.1", port):
                assert time.monotonic() < deadline and serve.poll() is None, "serve did not start"
                time.sleep(0.1)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                for w in words[:5]:  # warm: the pool, the query lane, the HNSW pages
                    assert c.get("/search", params={"q": w, "mode": "semantic"}).status_code == 200
            time.sleep(2)  # the worker LISTENing
            load = Load(
                base=f"http://127.0.0.1:{port}",
                url=url,
                search_rate=args.search_rate,
                insert_rate=args.insert_rate,
                words=words,
            )
            snaps["load_start"] = cpu.snapshot()
            load.start()
            marks["load_start"] = load.started
            time.sleep(args.hold)

            print("model add...", flush=True)
            marks["add_start"] = time.monotonic()
            add = must(
                timed(
                    [
                        "model",
                        "add",
                        CAND,
                        "--provider",
                        "openai",
                        "--model",
                        CAND_MODEL,
                        "--dimensions",
                        str(CAND_DIMS),
                        "--storage",
                        CAND_STORAGE,
                    ],
                    env,
                )
            )
            marks["add_end"] = add["returned"]
            steps["add_s"] = add["seconds"]

            print("model backfill...", flush=True)
            snaps["backfill_start"] = cpu.snapshot()
            marks["backfill_start"] = time.monotonic()
            bf_env = dict(env)
            if args.backfill_rpm:  # the provider limit the backfill keeps to (its own knob)
                bf_env["EMBEDDING_REQUESTS_PER_MINUTE"] = str(args.backfill_rpm)
            if (
                args.search_target_ms is not None
            ):  # the adaptive pace (clipembed.bulk.adaptive_pace)
                bf_env["CLIPEMBED_BACKFILL_SEARCH_TARGET_MS"] = str(args.search_target_ms)
            bf = must(timed(["model", "backfill", CAND, "--json"], bf_env))
            marks["backfill_end"] = bf["returned"]
            snaps["backfill_end"] = cpu.snapshot()
            summary = json.loads(bf["stdout"][-1])
            steps["backfill"] = {
                "wall_s": bf["seconds"],
                "clips_per_s": round(summary["processed"] / bf["seconds"], 1),
                "summary": summary,
            }
            print(f"backfill: {steps['backfill']['wall_s']} s, {summary}", flush=True)

            steps["drain_before_promote"] = drain(url, 600)
            listing = json.loads(must(timed(["model", "list", "--json"], env))["stdout"][-1])
            spaces = {s["name"]: s for s in listing}
            SPACE_TABLES.update({n: s["table"] for n, s in spaces.items()})
            steps["coverage_listed"] = {
                n: {k: s[k] for k in ("state", "live_clips", "embedded", "missing", "coverage")}
                for n, s in spaces.items()
            }
            steps["coverage_sql_before_promote"] = {
                n: coverage_sql(url, s["table"]) for n, s in spaces.items()
            }
            print(f"coverage: {steps['coverage_listed']}", flush=True)

            print("model promote...", flush=True)
            forced = False
            promote = switch(
                ["model", "promote", CAND],
                env,
                r"promoted '(\S+)' in (\d+) ms",
                attempts=args.promote_attempts,
                url=url,
            )
            if promote is None:
                # refused every time because of clips inserted a moment earlier: when every
                # clip the candidate lacks is waiting in the queue (the active space lacks
                # them too, the worker embeds them into both), --force is what an operator
                # can do; the coverage is checked here instead, just before and just after
                steps["coverage_sql_before_forced_promote"] = {
                    n: coverage_sql(url, s["table"]) for n, s in spaces.items()
                }
                if steps["coverage_sql_before_forced_promote"][CAND]["missing_not_queued"]:
                    raise RuntimeError(f"the candidate is incomplete: {REFUSALS}")
                forced = True
                promote = must(
                    timed(
                        ["model", "promote", CAND, "--force"],
                        env,
                        r"promoted '(\S+)' in (\d+) ms",
                    )
                )
                promote["refusals"] = list(REFUSALS)
            assert promote["marked"] is not None, promote["stdout"]
            switches.append({**promote, "old": "default", "new": CAND})
            marks["promote_launch"] = promote["launched"]
            marks["promote_commit"] = promote["marked"]
            marks["promote_return"] = promote["returned"]
            steps["coverage_sql_after_promote"] = {
                n: coverage_sql(url, s["table"]) for n, s in spaces.items()
            }
            steps["promote"] = {
                "reported_ms": int(promote["match"][1]),
                "command_start_to_commit_printed_s": round(
                    promote["marked"] - promote["launched"], 3
                ),
                "commit_to_command_exit_s (mirror sync)": round(
                    promote["returned"] - promote["marked"], 3
                ),
                "stdout": promote["stdout"],
                "refused_first": promote["refusals"],
                "forced_after_refusals": forced,
            }
            time.sleep(args.hold)

            print("model rollback...", flush=True)
            rollback = must(
                timed(["model", "rollback"], env, r"rolled back to '(\S+)' in (\d+) ms")
            )
            assert rollback["marked"] is not None, rollback["stdout"]
            switches.append({**rollback, "old": CAND, "new": "default"})
            marks["rollback_launch"] = rollback["launched"]
            marks["rollback_commit"] = rollback["marked"]
            marks["rollback_return"] = rollback["returned"]
            steps["rollback"] = {
                "reported_ms": int(rollback["match"][1]),
                "command_start_to_commit_printed_s": round(
                    rollback["marked"] - rollback["launched"], 3
                ),
                "commit_to_command_exit_s (mirror sync)": round(
                    rollback["returned"] - rollback["marked"], 3
                ),
                "stdout": rollback["stdout"],
            }
            time.sleep(args.hold)
            completed = True
        finally:
            if load is not None:
                snaps["load_stop"] = cpu.snapshot()
                load.stop()
                marks["load_stop"] = load.stopped
                marks["load_end"] = load.ended
            if not completed:  # failing: leave no server or worker behind
                for p in procs.values():
                    p.terminate()
                    p.wait(30)
        try:
            steps["drain_after_load"] = drain(url, 300)
            worker.send_signal(signal.SIGTERM)
            worker_out, _ = worker.communicate(timeout=60)
            worker_stats = [json.loads(x) for x in worker_out.splitlines() if x.startswith("{")]
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    p.wait(30)
        with urllib.request.urlopen(fake.removesuffix("/v1") + "/_stats", timeout=10) as resp:
            fake_stats = json.load(resp)
        for name, fh in logs.items():
            fh.seek(0)
            text = fh.read()
            errs = [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]
            steps[f"{name}_log_error_lines"] = errs[:10]
            fh.close()

        assert load is not None
        searches = sorted(load.searches, key=lambda r: r["start"])
        if args.raw:
            args.raw.write_text(
                json.dumps({"marks": marks, "searches": searches, "inserts": load.inserts})
            )
        final_coverage = {n: coverage_sql(url, s["table"]) for n, s in spaces.items()}
        scores = check_scores(url, searches, spaces)
        inserted = verify_inserted(url, [t for _, t in load.inserts], spaces)
        sum(1 for t, _ in load.inserts if marks["backfill_start"] <= t < marks["backfill_end"])

    result = report.build(
        args,
        command=command,
        wall=wall,
        prepared=prepared,
        load=load,
        searches=searches,
        marks=marks,
        snaps=snaps,
        steps=steps,
        switches=switches,
        scores=scores,
        inserted=inserted,
        final_coverage=final_coverage,
        worker_stats=worker_stats,
        fake_stats=fake_stats,
    )
    common.save(args.name, result)


if __name__ == "__main__":
    main()
