"""``make bench``: every benchmark in turn; results in bench/results/, summarised in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "bench.backfill",
    "bench.backfill_index",
    "bench.search_speed",
    "bench.worker_latency",
    "bench.local_model",
)

for module in MODULES:
    print(f"== {module}", flush=True)
    subprocess.run([sys.executable, "-m", module], check=True)
