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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import psycopg

from bench import common
from clipembed import clips as clips_mod
from clipembed import demo_data
from clipembed.db import migrations
from clipembed.testing import servers
from clipembed.testing.fakeopenai.protocol import expected_vector

KEY = "sk-test-0123456789abcdefBENCH"
DEFAULT_DIMS = 768
CAND = "cand"
CAND_MODEL = "text-embedding-3-large"
CAND_DIMS = 256
CAND_STORAGE = "halfvec"
SCORE_TOLERANCE = 2e-3
TIMEOUT_S = 120.0  # the load generator's patience per search (a timeout counts as failed)
WORD = re.compile(r"^[a-z]{3,}$")
STOP = {"the", "and", "for", "this", "that", "was", "with", "you", "are", "can", "not", "from"}


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


# --- the load ----------------------------------------------------------------------------------
class Http:
    """A minimal HTTP/1.1 keep-alive client (GET, Content-Length bodies): the load generator
    must cost little CPU on a 2-core machine (httpx took ~0.3 core at 20 requests/s). A request
    takes an idle connection or opens one: nothing waits on the client's side, so a backlog
    forms in the server, where it is measured."""

    def __init__(self, base: str) -> None:
        parsed = urllib.parse.urlparse(base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.reopened = 0  # idle connections found closed by the server

    async def get(self, path: str) -> tuple[int, bytes]:
        while self.idle:  # an idle connection the server has closed meanwhile: take another
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, path)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if getattr(exc, "partial", b""):
                    raise
                self.reopened += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return await self._exchange(reader, writer, path)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
    ) -> tuple[int, bytes]:
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers["content-length"]))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class Load:
    """Searches over HTTP and INSERTs on fixed schedules (open loop), on a thread of its own."""

    def __init__(
        self,
        *,
        base: str,
        url: str,
        search_rate: float,
        insert_rate: float,
        words: list[str],
        insert_clients: int = 4,
        seed: int = 7,
    ) -> None:
        self.base = base
        self.url = url
        self.search_rate = search_rate
        self.insert_rate = insert_rate
        self.words = words
        self.rng = random.Random(seed)
        self.searches: list[dict[str, Any]] = []
        self.inserts: list[tuple[float, str]] = []
        self.insert_errors: list[str] = []
        self.insert_clients = insert_clients
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.started = 0.0
        self.stopped = 0.0  # no request scheduled after this
        self.ended = 0.0  # every request answered

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self.stopped = time.monotonic()
        self._stop.set()
        self._thread.join(TIMEOUT_S + 30)
        self.ended = time.monotonic()

    def query(self) -> tuple[str, str]:
        n = 1 if self.rng.random() < 0.5 else 2
        text = " ".join(self.rng.sample(self.words, n))
        return text, ("semantic" if self.rng.random() < 0.5 else "hybrid")

    async def _main(self) -> None:
        client = Http(self.base)
        clips = itertools.cycle(list(demo_data.generate(20_000, seed=2)))
        t0 = time.monotonic()
        try:
            await asyncio.gather(
                self._searches(client),
                *(self._inserts(k, clips, t0) for k in range(self.insert_clients)),
            )
        finally:
            client.close()

    async def _searches(self, client: Http) -> None:
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.search_rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                break
            q, mode = self.query()
            task = asyncio.create_task(self._search(client, q, mode, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def _search(self, client: Http, q: str, mode: str, due: float) -> None:
        rec: dict[str, Any] = {"q": q, "mode": mode, "start": time.monotonic(), "due": due}
        path = "/search?" + urllib.parse.urlencode({"q": q, "mode": mode, "limit": 10})
        try:
            status, raw = await asyncio.wait_for(client.get(path), TIMEOUT_S)
            rec["end"] = time.monotonic()
            rec["status"] = status
            if status == 200:
                body = json.loads(raw)
                rec["space"] = body["space"]["name"]
                rec["dims"] = body["space"]["dimensions"]
                rec["degraded"] = body["degraded"]
                rec["n"] = len(body["results"])
                rec["hits"] = [
                    (h["id"], h["semantic"]["score"]) for h in body["results"] if h["semantic"]
                ]
            else:
                rec["error"] = raw[:300].decode(errors="replace")
        except Exception as exc:  # a failed search is data, not a crash
            rec["end"] = time.monotonic()
            rec["status"] = 0
            rec["error"] = f"{type(exc).__name__}: {exc}"[:300]
        self.searches.append(rec)

    async def _inserts(self, client: int, clips: Any, t0: float) -> None:
        """Every ``insert_clients``-th insert of the shared schedule, one per transaction."""
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        async with conn:
            i = client
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, t0 + i / self.insert_rate - time.monotonic()))
                if self._stop.is_set():
                    break
                c = next(clips)
                tid = f"mig-{i}-{c['twitch_clip_id']}"[:100]
                try:
                    await conn.execute(
                        "INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title,"
                        " creator_name, creator_id, broadcaster_name, broadcaster_id, game_id,"
                        " game_name, language, thumbnail_url, duration, view_count, created_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            tid,
                            c["twitch_clip_url"],
                            c["embed_url"],
                            c["title"],
                            c["creator_name"],
                            c["creator_id"],
                            c["broadcaster_name"],
                            c["broadcaster_id"],
                            c["game_id"],
                            c["game_name"],
                            c["language"],
                            c["thumbnail_url"],
                            c["duration"],
                            c["view_count"],
                            c["created_at"],
                        ),
                    )
                    self.inserts.append((time.monotonic(), tid))
                except Exception as exc:
                    self.insert_errors.append(f"{type(exc).__name__}: {exc}"[:300])
                i += self.insert_clients


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


# --- CPU accounting ----------------------------------------------------------------------------
class Cpu:
    """CPU seconds of this benchmark's processes, by component, and of the whole machine."""

    def __init__(self, url: str, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        me = psutil.Process()
        for child in me.children():
            with contextlib.suppress(psutil.Error):
                if "clipembed.testing.fakeopenai" in " ".join(child.cmdline()):
                    self.pids["fake_provider"] = child.pid
        host = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("host", [""])[0]
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if host and "-D" in cmd and host in cmd:
                self.pids["postgres"] = proc.pid

    @staticmethod
    def _tree(pid: int) -> float:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def snapshot(self) -> dict[str, float]:
        out = {name: self._tree(pid) for name, pid in self.pids.items()}
        me = psutil.Process().cpu_times()
        out["bench_and_load_generator"] = me.user + me.system
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the clipembed commands, once exited
        out["clipembed_commands"] = ru.ru_utime + ru.ru_stime
        m = psutil.cpu_times()
        out["machine"] = m.user + m.nice + m.system + m.irq + m.softirq + m.steal
        out["t"] = time.monotonic()
        return out

    @staticmethod
    def cores(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        """Average cores used between two snapshots; ``others``: the machine minus this run."""
        seconds = b["t"] - a["t"]
        out = {k: round((b[k] - a[k]) / seconds, 2) for k in a if k != "t"}
        mine = sum(v for k, v in out.items() if k != "machine")
        out["others_on_the_machine"] = round(max(0.0, out["machine"] - mine), 2)
        out["seconds"] = round(seconds, 1)
        return out


# --- analysis ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    v = common.quantile(values, q)
    return None if v is None else round(v, 1)


def latency(records: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [(r["end"] - r["start"]) * 1000 for r in records if r["status"] == 200]
    return {
        "searches": len(records),
        "ok": len(ms),
        "p50_ms": pct(ms, 0.50),
        "p95_ms": pct(ms, 0.95),
        "p99_ms": pct(ms, 0.99),
        "max_ms": round(max(ms), 1) if ms else None,
    }


def reasons(failed: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in failed:
        err = r.get("error", "")
        if r["status"] == 0:
            key = "client timeout" if "Timeout" in err else "connection error"
        elif "database is unavailable" in err:
            key = "503 database unavailable (search pool timeout)"
        elif "semantic search is unavailable" in err:
            key = "503 semantic unavailable (query embedding missed its deadline)"
        else:
            key = f"{r['status']} {err[:60]}"
        out[key] = out.get(key, 0) + 1
    return out


def series(searches: list[dict[str, Any]], origin: float, step: float) -> list[dict[str, Any]]:
    """Latency and spaces per ``step`` seconds of request start (the backlog over time)."""
    buckets: dict[int, list[dict[str, Any]]] = {}
    for r in searches:
        buckets.setdefault(int((r["start"] - origin) // step), []).append(r)
    out = []
    for k in sorted(buckets):
        rs = buckets[k]
        lat = latency(rs)
        spaces: dict[str, int] = {}
        for r in rs:
            if r["status"] == 200:
                spaces[r["space"]] = spaces.get(r["space"], 0) + 1
        out.append(
            {
                "t_s": round(k * step),
                "n": len(rs),
                "failed": sum(1 for r in rs if r["status"] != 200),
                "p50_ms": lat["p50_ms"],
                "p95_ms": lat["p95_ms"],
                "spaces": spaces,
            }
        )
    return out


def vectors(
    url: str, tables: dict[str, str], wanted: dict[str, set[str]]
) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], np.ndarray] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for space, ids in wanted.items():
            if not ids:
                continue
            rows = conn.execute(
                f"SELECT clip_id::text, embedding::vector::real[] FROM {tables[space]}"
                " WHERE clip_id = ANY(%s::uuid[])",
                (sorted(ids),),
            ).fetchall()
            for cid, vec in rows:
                out[(space, cid)] = np.asarray(vec, dtype=np.float64)
    return out


def query_vector(text: str, space: dict[str, Any]) -> np.ndarray:
    """What the space's search compares with: the fake's vector, in the space's precision."""
    q = expected_vector(text, space["dimensions"])
    if space["storage"] == "halfvec":
        q = q.astype(np.float16)
    return q.astype(np.float64)


def check_scores(
    url: str, searches: list[dict[str, Any]], spaces: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Each semantic score against the cosine in the space the response names."""
    wanted: dict[str, set[str]] = {name: set() for name in spaces}
    for r in searches:
        if r["status"] == 200:
            wanted.setdefault(r["space"], set()).update(cid for cid, _ in r["hits"])
    unknown = sorted(set(wanted) - set(spaces))
    vecs = vectors(url, {n: s["table"] for n, s in spaces.items()}, {n: wanted[n] for n in spaces})
    qcache: dict[tuple[str, str], np.ndarray] = {}
    checked = top_checked = mismatched = top_mismatched = missing = wrong_dims = 0
    worst = 0.0
    examples: list[dict[str, Any]] = []
    for r in searches:
        if r["status"] != 200:
            continue
        space = spaces.get(r["space"])
        if space is None:
            mismatched += 1
            continue
        if r["dims"] != space["dimensions"]:
            wrong_dims += 1
        key = (r["q"], r["space"])
        if key not in qcache:
            qcache[key] = query_vector(r["q"], space)
        q = qcache[key]
        bad = False
        for k, (cid, score) in enumerate(r["hits"]):
            v = vecs.get((r["space"], cid))
            if v is None:
                missing += 1
                bad = True
                continue
            cos = float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v)))
            diff = abs(cos - score)
            worst = max(worst, diff)
            checked += 1
            top_checked += k == 0
            if diff > SCORE_TOLERANCE:
                bad = True
                top_mismatched += k == 0
                if len(examples) < 5:
                    examples.append(
                        {"q": r["q"], "space": r["space"], "clip": cid, "score": score, "cos": cos}
                    )
        mismatched += bad
    # the check must be able to fail: the same hits scored with another query's vector
    control = 0
    for r in searches[:200]:
        if r["status"] == 200 and r["hits"] and r["space"] in spaces:
            cid, score = r["hits"][0]
            v = vecs.get((r["space"], cid))
            if v is not None:
                q = query_vector(r["q"] + " x", spaces[r["space"]])
                control += abs(float(q @ v / np.linalg.norm(q) / np.linalg.norm(v)) - score) > (
                    SCORE_TOLERANCE
                )
    return {
        "responses_with_semantic_hits": sum(
            1 for r in searches if r["status"] == 200 and r["hits"]
        ),
        "scores_checked": checked,
        "top_hits_checked": top_checked,
        "responses_mismatched": mismatched,
        "top_hit_mismatches": top_mismatched,
        "hits_without_vector_in_named_space": missing,
        "responses_with_wrong_dimensions": wrong_dims,
        "unknown_space_names": unknown,
        "max_abs_score_error": float(f"{worst:.3g}"),
        "tolerance": SCORE_TOLERANCE,
        "control_wrong_query_detected_of_200": control,
        "examples": examples,
    }


def possible(start: float, end: float, switches: list[dict[str, Any]], first: str) -> set[str]:
    """The spaces that may have been active at some moment of [start, end].

    A switch committed somewhere between its command's launch and the moment it printed so.
    """
    out = set()
    current = first
    lo = float("-inf")
    for sw in switches:
        if start <= sw["marked"] and end >= lo:  # [start, end] meets the segment before it
            out.add(current)
        lo = sw["launched"]
        current = sw["new"]
    if end >= lo:
        out.add(current)
    return out


def effect(searches: list[dict[str, Any]], sw: dict[str, Any], until: float) -> dict[str, Any]:
    """How the switch showed in the answers (``until``: the next switch's launch)."""
    at, new, old = sw["marked"], sw["new"], sw["old"]
    ok = [r for r in searches if r["status"] == 200]
    after = [r for r in ok if at <= r["start"] and r["end"] < until]
    first_new = min((r["end"] for r in ok if r["space"] == new and r["end"] >= at), default=None)
    first_sent = min((r for r in ok if r["start"] >= at), key=lambda r: r["start"], default=None)
    near = [r for r in ok if at - 5 <= r["start"] < at + 5]
    return {
        "commit_to_first_response_from_new_ms": round((first_new - at) * 1000, 1)
        if first_new
        else None,
        "first_request_sent_after_commit": {
            "sent_ms_after_commit": round((first_sent["start"] - at) * 1000, 1),
            "answered_by": first_sent["space"],
            "latency_ms": round((first_sent["end"] - first_sent["start"]) * 1000, 1),
        }
        if first_sent
        else None,
        "requests_sent_after_commit_answered": len(after),
        "requests_sent_after_commit_answered_by_old": sum(1 for r in after if r["space"] == old),
        "requests_sent_before_commit_answered_by_new": sum(
            1 for r in ok if r["start"] < sw["launched"] and r["space"] == new and r["end"] > at
        ),
        "search_latency_p50_ms_around_commit": latency(near)["p50_ms"],
    }


def verify_inserted(
    url: str, inserted: list[str], spaces: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Every clip inserted during the run has the right vector (and hash) in every space."""
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, title, broadcaster_name, creator_name, game_name FROM clips"
            " WHERE twitch_clip_id = ANY(%s)",
            (inserted,),
        ).fetchall()
        texts = {
            r[0]: clips_mod.embedding_text(
                clips_mod.ClipText(
                    title=r[1], broadcaster_name=r[2], creator_name=r[3], game_name=r[4]
                )
            )
            for r in rows
        }
        for name, s in spaces.items():
            got = conn.execute(
                f"SELECT clip_id::text, embedding::vector::real[], content_hash, model"
                f" FROM {s['table']} WHERE clip_id = ANY(%s::uuid[])",
                (list(texts),),
            ).fetchall()
            wrong_vec = wrong_hash = 0
            for cid, vec, chash, model in got:
                want = expected_vector(texts[cid], s["dimensions"])
                if np.max(np.abs(np.asarray(vec) - want)) > SCORE_TOLERANCE:
                    wrong_vec += 1
                if bytes(chash) != clips_mod.content_hash(texts[cid], model, s["dimensions"]):
                    wrong_hash += 1
            out[name] = {
                "inserted": len(texts),
                "with_vector": len(got),
                "wrong_vector": wrong_vec,
                "wrong_content_hash": wrong_hash,
            }
    return out


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
            ):  # the adaptive pace (clipembed.jobs.adaptive_pace)
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
        inserts_during_backfill = sum(
            1 for t, _ in load.inserts if marks["backfill_start"] <= t < marks["backfill_end"]
        )

    phases = {
        "before": (marks["load_start"], marks["add_start"]),
        "add": (marks["add_start"], marks["backfill_start"]),
        "backfilling": (marks["backfill_start"], marks["backfill_end"]),
        "drain_and_coverage": (marks["backfill_end"], marks["promote_commit"]),
        "after_promote": (marks["promote_commit"], marks["rollback_commit"]),
        "after_rollback": (marks["rollback_commit"], marks["load_stop"]),
    }
    by_phase = {
        name: latency([r for r in searches if lo <= r["start"] < hi])
        for name, (lo, hi) in phases.items()
    }
    scheduled = marks["load_stop"] - marks["load_start"]
    by_space: dict[str, int] = {}
    for r in searches:
        if r["status"] == 200:
            by_space[r["space"]] = by_space.get(r["space"], 0) + 1
    statuses: dict[str, int] = {}
    for r in searches:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    failed = [r for r in searches if r["status"] != 200]
    violations = [
        r
        for r in searches
        if r["status"] == 200
        and r["space"] not in possible(r["start"], r["end"], switches, "default")
    ]
    promote_effect = effect(searches, switches[0], switches[1]["launched"])
    rollback_effect = effect(searches, switches[1], float("inf"))
    cand_sql = steps["coverage_sql_before_promote"][CAND]
    result = {
        "command": command,
        "clips": args.clips,
        "provider_latency_ms": args.provider_ms,
        "backfill_requests_per_minute": args.backfill_rpm or "unlimited",
        "candidate": {"model": CAND_MODEL, "dimensions": CAND_DIMS, "storage": CAND_STORAGE},
        "setup": prepared,
        "load": {
            "seconds": round(scheduled, 1),
            "search_rate_target": args.search_rate,
            "search_rate_achieved": round(len(searches) / scheduled, 2),
            "insert_rate_target": args.insert_rate,
            "insert_rate_achieved": round(len(load.inserts) / scheduled, 2),
            "insert_clients": load.insert_clients,
            "inserts": len(load.inserts),
            "inserts_during_backfill": inserts_during_backfill,
            "insert_errors": len(load.insert_errors),
            "insert_error_examples": load.insert_errors[:3],
            "last_answer_after_load_stop_s": round(marks["load_end"] - marks["load_stop"], 1),
            "generator_lag_ms_p99": pct([(r["start"] - r["due"]) * 1000 for r in searches], 0.99),
            "generator_lag_ms_max": pct([(r["start"] - r["due"]) * 1000 for r in searches], 1.0),
        },
        "searches": {
            "total": len(searches),
            "failed_non_200": len(failed),
            "by_status": statuses,
            "failed_by_reason": reasons(failed),
            "failed_examples": [
                {k: r.get(k) for k in ("q", "mode", "status", "error")} for r in failed[:5]
            ],
            "by_space": by_space,
            "by_mode": {
                m: sum(1 for r in searches if r["mode"] == m) for m in ("hybrid", "semantic")
            },
            "degraded": sum(1 for r in searches if r["status"] == 200 and r["degraded"]),
            "empty_results": sum(1 for r in searches if r["status"] == 200 and r["n"] == 0),
            "answered_from_a_space_not_active_during_the_request": len(violations),
        },
        "latency_by_phase": by_phase,
        "latency_all": latency(searches),
        "one_space_check": scores,
        "backfill": steps["backfill"],
        "coverage_at_promote": {
            "model_list": steps["coverage_listed"],
            "sql_before_promote": steps["coverage_sql_before_promote"],
            "sql_right_after_promote": steps["coverage_sql_after_promote"],
            "drain_before_promote": steps["drain_before_promote"],
            "sql_before_forced_promote": steps.get("coverage_sql_before_forced_promote"),
            "promote_refusals": len(steps["promote"]["refused_first"]),
            "promote_forced_after_refusals": steps["promote"]["forced_after_refusals"],
            "refusals": steps["promote"]["refused_first"],
        },
        "promote": {**steps["promote"], "effect": promote_effect},
        "rollback": {**steps["rollback"], "effect": rollback_effect},
        "add_s": steps["add_s"],
        "inserted_during_run": inserted,
        "final_coverage": final_coverage,
        "drain_after_load": steps["drain_after_load"],
        "worker_stats": worker_stats,
        "provider": {
            "requests": fake_stats.get("requests"),
            "inputs": fake_stats.get("inputs"),
            "by_status": fake_stats.get("by_status"),
            "dimensions_seen": fake_stats.get("dimensions_seen"),
        },
        "cpu_cores": {
            "whole_load": Cpu.cores(snaps["load_start"], snaps["load_stop"]),
            "during_backfill": Cpu.cores(snaps["backfill_start"], snaps["backfill_end"]),
        },
        "log_errors": {k: v for k, v in steps.items() if k.endswith("_log_error_lines")},
        "targets": {
            "failed_searches_0": len(failed) == 0,
            "two_space_answers_0": scores["responses_mismatched"] == 0
            and scores["responses_with_wrong_dimensions"] == 0
            and not violations,
            "candidate_covers_every_clip_at_promote": cand_sql["missing_not_queued"] == 0
            and (steps.get("coverage_sql_before_forced_promote") or {CAND: cand_sql})[CAND][
                "missing_not_queued"
            ]
            == 0
            and steps["coverage_sql_after_promote"][CAND]["missing_not_queued"] == 0
            and inserted[CAND]["with_vector"] == inserted[CAND]["inserted"],
            "promote_immediate_for_requests_after_commit": promote_effect[
                "requests_sent_after_commit_answered_by_old"
            ]
            == 0,
            "rollback_immediate_for_requests_after_commit": rollback_effect[
                "requests_sent_after_commit_answered_by_old"
            ]
            == 0,
            "promote_first_new_answer_under_1s": (
                promote_effect["commit_to_first_response_from_new_ms"] or 1e9
            )
            < 1000,
            "rollback_first_new_answer_under_1s": (
                rollback_effect["commit_to_first_response_from_new_ms"] or 1e9
            )
            < 1000,
        },
        "latency_series_10s": series(searches, marks["load_start"], 10.0),
        "wall_s": round(time.monotonic() - wall, 1),
        "marks_s_from_load_start": {k: round(v - marks["load_start"], 2) for k, v in marks.items()},
    }
    common.save(args.name, result)


if __name__ == "__main__":
    main()
