"""Backfill throughput: 100,000 generated clips from empty, through the fake provider.

1. No limit, 50 ms provider latency: end-to-end clips/s including the HNSW index build, and
   the backfill process's peak RSS. Target >= 1,000 clips/s (the original: ~4).
2. A requests- and tokens-per-minute limit on the provider and in clipembed: throughput as a
   fraction of the limit's ceiling. Target >= 0.9 with zero failed clips.

    python -m bench.backfill [--clips 100000] [--limited-clips 12000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

from bench import common
from clipembed import demo_data

KEY = "sk-bench-000000000000000000"


def make_file(directory: Path, count: int, seed: int) -> Path:
    path = directory / f"clips-{count}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for clip in demo_data.generate(count, seed=seed):
            fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
    return path


def run(clips: int, limited_clips: int) -> dict:
    result: dict = {}
    previous = common.RESULTS / "backfill.json"
    if clips == 0 and previous.exists():  # --clips 0: re-measure only the limited run
        result["unlimited"] = json.loads(previous.read_text())["unlimited"]
    with tempfile.TemporaryDirectory() as tmp:
        if clips:
            result["unlimited"] = unlimited(Path(tmp), clips)
        result["limited"] = limited(Path(tmp), limited_clips)
    return result


def unlimited(tmp: Path, clips: int) -> dict:
    data = make_file(Path(tmp), clips, seed=1)
    with common.postgres() as url, common.fake_provider("--latency-ms", "50") as base:
        e = common.fake_provider_env(url, base, tmp, EMBEDDING_MAX_CONCURRENCY="8")
        common.clipembed("migrate", "up", env_vars=e)
        _, import_seconds, _ = common.clipembed("import", str(data), env_vars=e)
        out, seconds, rss = common.clipembed(
            "backfill", "--batch", "100", "--concurrency", "8", "--json", env_vars=e
        )
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        return {
            "clips": clips,
            "provider_latency_ms": 50,
            "import_seconds": round(import_seconds, 1),
            "backfill_seconds_end_to_end": round(seconds, 1),
            "clips_per_second": round(summary["processed"] / seconds, 1),
            "processed": summary["processed"],
            "failed": summary["failed"],
            "index_rebuilt": summary["index_rebuilt"],
            "requests": summary["requests"],
            "peak_rss_mib": rss,
        }


def limited(tmp: Path, limited_clips: int) -> dict:
    rpm, batch = 300, 100
    data = make_file(Path(tmp), limited_clips, seed=2)
    with common.postgres() as url:
        # tokens per request ~ batch * average tokens per clip text; set tpm so both limits bind alike
        tpm = 1_400_000
        with common.fake_provider(
            "--latency-ms", "50", "--rpm", str(rpm), "--tpm", str(tpm)
        ) as base:
            e = common.env(
                DATABASE_URL=url,
                EMBEDDING_PROVIDER="openai",
                OPENAI_API_KEY=KEY,
                EMBEDDING_API_BASE_URL=base,
                REDIS_URL="none",
                EMBEDDING_REQUESTS_PER_MINUTE=str(rpm),
                EMBEDDING_TOKENS_PER_MINUTE=str(tpm),
                EMBEDDING_MAX_CONCURRENCY="8",
                CLIPEMBED_HOME=str(tmp),
                CLIPEMBED_LOG_LEVEL="WARNING",
            )
            common.clipembed("migrate", "up", env_vars=e)
            common.clipembed("import", str(data), env_vars=e)
            t = time.monotonic()
            out, seconds, _ = common.clipembed(
                "backfill", "--batch", str(batch), "--concurrency", "8", "--json", env_vars=e
            )
            summary = json.loads(out.stdout.strip().splitlines()[-1])
            # the command's own embedding phase (excludes Python start-up and connecting)
            seconds = summary["duration"]
            minutes = seconds / 60
            ceiling_requests = rpm * minutes
            ceiling_tokens = tpm * minutes
            fraction = max(
                summary["requests"] / ceiling_requests, summary["tokens"] / ceiling_tokens
            )
            return {
                "clips": limited_clips,
                "rpm": rpm,
                "tpm": tpm,
                "seconds": round(seconds, 1),
                "requests": summary["requests"],
                "tokens": summary["tokens"],
                "rate_limited_429s": summary["rate_limited"],
                "failed": summary["failed"],
                "fraction_of_ceiling": round(fraction, 3),
                "note": "fraction = max(requests/(rpm*minutes), tokens/(tpm*minutes)) over the backfill's own duration",
            }
            del t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--limited-clips", type=int, default=18_000)
    args = parser.parse_args()
    common.save("backfill", run(args.clips, args.limited_clips))


if __name__ == "__main__":
    main()
