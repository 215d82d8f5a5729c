"""Shared helpers for benchmarks: a private PostgreSQL, the fake provider as a process, machine facts."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (the smallest value with at least ``q`` of them at or
    below it); None for no values. Every benchmark reports percentiles through this."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def percentiles(times: Sequence[float], digits: int = 1) -> dict[str, float | None]:
    """p50, p95 and max of ``times`` (milliseconds), rounded."""

    def rounded(q: float) -> float | None:
        v = quantile(times, q)
        return None if v is None else round(v, digits)

    return {"p50_ms": rounded(0.5), "p95_ms": rounded(0.95), "max_ms": rounded(1.0)}


def python_loop_ns() -> float:
    """Nanoseconds per iteration of a plain Python loop, best of five: a rough single-core
    speed, so results from machines with the same model name can be compared (two "AMD EPYC"
    machines imported a million clips at 5,622 and 2,491 clips/s)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        total = 0
        for i in range(200_000):
            total += i * i
        best = min(best, (time.perf_counter_ns() - started) / 200_000)
    return round(best, 1)


def load_averages() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded (cheap: read at a phase's start)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    load = load_averages()  # before the loop below spends its CPU
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem = int(fh.readline().split()[1]) // 1024
    cpu = platform.processor()
    mhz = None
    with contextlib.suppress(OSError, ValueError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = round(float(line.split(":", 1)[1]))
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "cpu_mhz": mhz,
        "python_loop_ns": python_loop_ns(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "load_average_at_start": load,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


@contextlib.contextmanager
def postgres(keep: Path | None = None, *, shared_buffers: str | None = None) -> Iterator[str]:
    """A private PostgreSQL, deleted at the end; ``keep``: its data directory, kept and reused
    (a long benchmark can then re-measure search without rebuilding its data).

    ``shared_buffers``: set and restarted for (PostgreSQL's default of 128MB holds a tenth of a
    million clips' postings and index: every search then copies pages from the OS cache, which
    a tuned server does not; docs/benchmarks.md)."""
    from clipembed import pgembed

    with tempfile.TemporaryDirectory() as tmp:
        pgdata = keep / "pg" if keep else Path(tmp) / "pg"
        server = pgembed.get_server(pgdata, cleanup_mode="stop" if keep else "delete")
        try:
            server.psql(
                "ALTER SYSTEM SET maintenance_work_mem = '1GB'; ALTER SYSTEM SET max_wal_size = '4GB';"
            )
            server.psql("SELECT pg_reload_conf();")
            if shared_buffers and shared_buffers not in server.psql("SHOW shared_buffers;").split():
                server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
                pgembed.pg_ctl(server, "-w", "-m", "fast", "restart")
            yield str(server.get_uri("postgres"))
        finally:
            server.cleanup()


@contextlib.contextmanager
def fake_provider(*args: str) -> Iterator[str]:
    """The fake OpenAI server in its own process (so it runs on the other core)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipembed.testing.fakeopenai", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def serving(
    env_vars: dict[str, str], *, log: Any = subprocess.DEVNULL, timeout: float = 120.0
) -> Iterator[str]:
    """``clipembed serve`` in its own process on a free port; yields its base URL once the port
    answers, and stops it on the way out. ``log``: where its output goes (a file to read its
    errors back)."""
    from clipembed.testing import servers

    port = servers.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipembed", "serve", "--port", str(port)],
        env=env_vars,
        stdout=log,
        stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while not servers.port_open("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("clipembed serve did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def env(**values: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "CLIPEMBED_"))
    }
    base.update(values)
    return base


#: The API key the benchmarks give the fake provider (any Bearer key is accepted).
BENCH_KEY = "sk-bench-000000000000000000"


def fake_provider_env(url: str, base: str, home: Path | str, **values: str) -> dict[str, str]:
    """The environment of a ``clipembed`` command against the fake provider at ``base``: no
    Redis, no limit that binds, warnings only; ``values`` add or override variables."""
    return env(
        DATABASE_URL=url,
        EMBEDDING_PROVIDER="openai",
        OPENAI_API_KEY=BENCH_KEY,
        EMBEDDING_API_BASE_URL=base,
        REDIS_URL="none",
        EMBEDDING_REQUESTS_PER_MINUTE="1000000",
        EMBEDDING_TOKENS_PER_MINUTE="1000000000",
        CLIPEMBED_HOME=str(home),
        CLIPEMBED_LOG_LEVEL="WARNING",
        **values,
    )


def clipembed(
    *args: str, env_vars: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run the real command; returns (result, seconds, peak RSS of the child in MiB)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "clipembed", *args], env=env_vars, capture_output=True, text=True
    )
    seconds = time.monotonic() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if out.returncode not in (0, 1):
        raise RuntimeError(f"clipembed {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out, seconds, max(peak, before) // 1024
