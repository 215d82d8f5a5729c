"""``clipembed import`` itself, end to end: the bulk path against the row path.

Generates N clips (the demo generator: several languages, Japanese and Korean bigram analysis
included) into a .jsonl.gz, then runs the real command on a fresh embedded PostgreSQL for each
path: parse, validate, load, search analysis, postings, queue. A second run of the bulk path
re-imports the same file with 10 % of the titles edited (an update-heavy import). The row path
is measured on the first ``--rows-clips`` clips only (it is ~10x slower).

    python -m bench.bulk_import [--clips 100000] [--rows-clips 20000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from bench import common
from clipembed import demo_data


def make_file(path: Path, count: int, *, edit_every: int = 0) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        for i, clip in enumerate(demo_data.generate(count, seed=7)):
            if edit_every and i % edit_every == 0:
                clip["title"] = clip["title"][:200] + " (edited)"
            fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
    return path


def run_import(url: str, home: Path, path: Path, choice: str) -> dict[str, Any]:
    e = common.env(DATABASE_URL=url, CLIPEMBED_HOME=str(home), CLIPEMBED_LOG_LEVEL="WARNING")
    load_before = os.getloadavg()[0]
    out, seconds, peak = common.clipembed("import", str(path), "--path", choice, env_vars=e)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    loaded = int(re.search(r"loaded (\d+) clips", out.stdout).group(1))  # type: ignore[union-attr]
    with psycopg.connect(url) as conn:
        queued = conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0]  # type: ignore[index]
        postings = conn.execute("SELECT count(*) FROM clip_postings").fetchone()[0]  # type: ignore[index]
    return {
        "path": choice,
        "clips": loaded,
        "seconds": round(seconds, 1),
        "clips_per_s": round(loaded / seconds),
        "peak_rss_mib": peak,
        "queue_rows_after": queued,
        "postings_after": postings,
        "load_average_before": round(load_before, 2),
        "output": out.stdout.strip()[-120:],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--rows-clips", type=int, default=20_000)
    args = parser.parse_args()
    results: dict[str, Any] = {"command": "python -m bench.bulk_import " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        big = make_file(tmp / "clips.jsonl.gz", args.clips)
        edited = make_file(tmp / "edited.jsonl.gz", args.clips, edit_every=10)
        small = make_file(tmp / "small.jsonl.gz", args.rows_clips)
        results["file_mib"] = round(big.stat().st_size / 2**20, 1)
        runs = []
        with common.postgres() as url:
            e = common.env(DATABASE_URL=url, CLIPEMBED_HOME=str(tmp / "home"))
            common.clipembed("migrate", "up", env_vars=e)
            runs.append({"run": "bulk, empty table", **run_import(url, tmp / "home", big, "bulk")})
            runs.append(
                {"run": "bulk, 10 % edited", **run_import(url, tmp / "home", edited, "bulk")}
            )
        with common.postgres() as url:
            e = common.env(DATABASE_URL=url, CLIPEMBED_HOME=str(tmp / "home2"))
            common.clipembed("migrate", "up", env_vars=e)
            runs.append(
                {"run": "rows, empty table", **run_import(url, tmp / "home2", small, "rows")}
            )
        results["runs"] = runs
    common.save("bulk_import", results)


if __name__ == "__main__":
    main()
