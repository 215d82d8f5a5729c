"""Drive HTTP load with ``wrk`` (C, one thread, epoll) instead of a Python client.

On these 2 cores a Python load generator is itself a CPU consumer: the overload benchmark's
asyncio client lagged 100 ms at the median on its own event loop while it drove 128
connections, and that lag was counted in every latency it reported. ``wrk`` costs a small
fraction of that. It keeps ``connections`` requests in flight (a closed loop). After a 503 a
next request waits the 1 s of ``Retry-After`` (roughly: wrk's ``delay`` hook is per request, not
per connection), or, with ``retry_after=False``, goes at once, as a hostile or careless client's
would. Each request takes the next path of a list, so every search is new
until the list wraps.

wrk's latency figures cover every completed response, whatever its status (its Lua API gives
no per-request time); the status counts come from its ``response`` hook, a 503 split by its
reason (shed at admission, cut at the deadline). Debian's package:
``apt-get install wrk`` (``make bench-tools``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

SCRIPT = r"""
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local i = 0
local owed = 0
statuses = {}

-- a 503's Retry-After, honoured roughly: wrk asks delay() before each request of a connection,
-- and each 503 seen delays one next request by its Retry-After (%(retry_after)s: on or off)
function delay()
  if %(retry_after)s and owed > 0 then
    owed = owed - 1
    return 1000
  end
  return 0
end

function request()
  i = i + 1
  return wrk.format("GET", paths[((i - 1) %% #paths) + 1])
end

function response(status, headers, body)
  local key = tostring(status)
  if status == 503 and body then
    if body:find("too many searches", 1, true) then key = "503 shed at admission"
    elseif body:find("within its deadline", 1, true) then key = "503 cut at the deadline"
    end
  end
  statuses[key] = (statuses[key] or 0) + 1
  if status == 503 then owed = owed + 1 end
end

local threads = {}
function setup(thread) threads[#threads + 1] = thread end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do io.write(string.format("STATUS %%d|%%s\n", v, k)) end
  end
  io.write(string.format("LATENCY %%d %%d %%d %%d %%d\n", latency:percentile(50),
    latency:percentile(95), latency:percentile(99), latency.max, latency.min))
  io.write(string.format("SUMMARY %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    summary.errors.timeout, summary.errors.connect, summary.errors.read, summary.errors.status))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    base: str,
    paths: list[str],
    *,
    connections: int,
    seconds: float,
    timeout_s: float = 30.0,
    retry_after: bool = True,
) -> dict[str, Any]:
    """Run wrk against ``base`` over ``paths`` (each already a path with its query string).
    ``retry_after``: a 503 delays a next request by 1 s (``Retry-After: 1``, what the server
    sends), as a well-behaved client would; off, shed clients come back at once."""
    if not available():
        raise RuntimeError("wrk is not installed: `make bench-tools` (Debian's package wrk)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "paths.txt").write_text("\n".join(paths) + "\n", encoding="utf-8")
        script = tmp / "load.lua"
        script.write_text(
            SCRIPT % {"paths": tmp / "paths.txt", "retry_after": str(retry_after).lower()},
            encoding="utf-8",
        )
        done = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={max(1, round(timeout_s))}s",
                "-s",
                str(script),
                base,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + timeout_s + 60,
            check=False,
        )
    if done.returncode != 0:
        detail = re.sub(r"\s+", " ", done.stderr or done.stdout)[-300:]
        raise RuntimeError(f"wrk exited with {done.returncode}: {detail}")
    return parse(done.stdout)


def parse(output: str) -> dict[str, Any]:
    """wrk's ``done`` lines as numbers (milliseconds for latencies)."""
    statuses: dict[str, int] = {}
    out: dict[str, Any] = {"by_status": statuses}
    for line in output.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "STATUS":
            count, _, key = line.split(" ", 1)[1].partition("|")
            statuses[key] = statuses.get(key, 0) + int(count)
        elif parts[0] == "LATENCY":
            p50, p95, p99, top, low = (int(x) / 1000 for x in parts[1:6])
            out["latency_ms"] = {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": top,
                                 "min_ms": low}  # fmt: skip
        elif parts[0] == "SUMMARY":
            requests, duration, timeouts, connect, read, status = (int(x) for x in parts[1:7])
            out.update(
                requests=requests,
                seconds=round(duration / 1e6, 2),
                timeouts=timeouts,
                connect_errors=connect,
                read_errors=read,
                non_2xx_3xx=status,
            )
    if "latency_ms" not in out:
        raise RuntimeError("wrk printed no summary: " + re.sub(r"\s+", " ", output)[:300])
    return out


def search_paths(texts: list[str], mode: str = "hybrid") -> list[str]:
    return [f"/search?mode={mode}&q={quote(t)}" for t in texts]
