"""``make demo``: the whole pipeline on this machine, with no server to install and no API key.

Starts the embedded PostgreSQL (and a private Redis when one can be started, else runs
uncached and says so), migrates, loads 3,000 generated clips, backfills them with the bundled
local model, and prints the summary and the statistics. Everything is kept under
``CLIPEMBED_HOME`` (default ``~/.clipembed``): a second run finds the clips embedded and
finishes in seconds, without even loading the model.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEMO_CLIPS = 3000  # enough for search to be interesting, few enough to embed in a minute on 2 cores


def demo_clips() -> int:
    """How many clips to generate; ``CLIPEMBED_DEMO_CLIPS`` lets tests run a small demo."""
    raw = os.environ.get("CLIPEMBED_DEMO_CLIPS", "")
    try:
        return max(1, int(raw)) if raw else DEMO_CLIPS
    except ValueError:
        print(f"error: CLIPEMBED_DEMO_CLIPS={raw!r} is not a number", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    os.environ.setdefault("EMBEDDING_PROVIDER", "local")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if "REDIS_URL" not in os.environ:
        os.environ["REDIS_URL"] = "embedded"
    from clipembed import demo_data, logs, runtime, settings
    from clipembed.bulk import backfill, importer, progress
    from clipembed.cli import common
    from clipembed.db import connection, migrations
    from clipembed.status import stats as stats_mod
    from clipembed.store import clip_table

    logs.setup(os.environ.get("CLIPEMBED_LOG_LEVEL", "WARNING"))
    started = time.monotonic()
    try:
        cfg = backfill.effective_settings(settings.load(), batch_size=100, concurrency=2)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    out = common.stdout
    wanted = demo_clips()

    async def run() -> int:
        out.print(f"[bold]clipembed demo[/] — state in {cfg.clipembed_home}")
        url = connection.database_url(cfg)
        out.print(
            f"database: {'DATABASE_URL' if cfg.database_url else 'embedded PostgreSQL + pgvector'}"
        )
        dims = await runtime.resolve_dimensions(cfg)
        conn = await connection.connect(url, autocommit=True)
        async with conn:
            await migrations.up(conn, dimensions=dims)
            cur = await conn.execute(clip_table.COUNT_CLIPS)
            have = (await cur.fetchone() or (0,))[0]
        if have < wanted:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "demo-clips.jsonl.gz"
                with gzip.open(path, "wt", encoding="utf-8") as fh:
                    for clip in demo_data.generate(wanted):
                        fh.write(json.dumps(clip, ensure_ascii=False) + "\n")
                conn = await connection.connect(url)
                async with conn:
                    report = await importer.import_file(conn, path)
            out.print(f"loaded {report.loaded} generated clips")
        else:
            out.print(f"{have} clips already loaded")
        async with runtime.open_runtime(cfg) as rt:
            svc = rt.require_service()
            cache = (
                "Redis cache on"
                if svc.link is not None and await svc.link.ping()
                else "no Redis: running uncached"
            )
            out.print(
                f"embedding with {svc.provider.name} model {svc.model} ({svc.dimensions} dims), {cache}"
            )
            summary = await backfill.run(
                rt,
                progress=progress.Progress("backfill", terminal=common.is_terminal()),
            )
            for line in summary.lines():
                out.print(line)
            data = await stats_mod.collect(rt.pool, model=svc.model, dimensions=svc.dimensions)
        out.print("")
        for line in stats_mod.lines(data):
            out.print(line)
        out.print(
            f"\ndemo finished in {time.monotonic() - started:.1f}s. Try: "
            f"EMBEDDING_PROVIDER=local .venv/bin/clipembed search 'insane clutch'"
        )
        return backfill.exit_code(summary)

    raise SystemExit(common.run(run))


if __name__ == "__main__":
    main()
