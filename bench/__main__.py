"""``make bench``: every benchmark in turn; results in bench/results/, summarised in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys

for module in ("bench.backfill", "bench.search_speed", "bench.worker_latency", "bench.local_model"):
    print(f"== {module}", flush=True)
    subprocess.run([sys.executable, "-m", module], check=True)
