"""``make bench``: the standard benchmarks in turn (the others, long or needing a quiet machine,
are run one by one: ``python -m bench.<name>``, each listed in docs/benchmarks.md with its
command); results in bench/results/, summarised in docs/benchmarks.md."""

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
