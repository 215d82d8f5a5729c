"""Overload (issue 18): more concurrent searches than the machine can serve.

``clipembed serve`` (a process of its own, default settings) over the 3,504 real clips, every
clip embedded through the fake provider (its own process, 20 ms an answer), and a closed loop
of ``--clients`` concurrent clients sending unique hybrid searches (real stream titles: never
cached) for ``--seconds``. Target: no response slower than the search deadline
(``SEARCH_STATEMENT_TIMEOUT_MS``, 2 s) + 100 ms; the excess answered 503 "overloaded" at once.

The clients share one address, so the per-client search limits are off (as in the migration
benchmark); everything else is the default.

    python -m bench.search_overload [--clients 128] [--seconds 30] [--driver python|wrk]

``--driver wrk`` drives the same load from Debian's ``wrk`` (``make bench-tools``;
:mod:`bench.wrk_driver`): a C client that costs the cores little. Its latency figures cover
every response.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common, query_lane, wrk_driver

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitch"
DEADLINE_S = 2.0  # SEARCH_STATEMENT_TIMEOUT_MS's default
SLACK_S = 0.1


lags: list[float] = []


async def search_once(client: httpx.AsyncClient, q: str) -> tuple[int, str, bool, httpx.Headers]:
    """One hybrid search: (status, body, degraded, headers); status 0 and the error's name
    when the request itself failed. Shared with ``bench.search_flood``'s users."""
    try:
        r = await client.get("/search", params={"q": q, "mode": "hybrid"})
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__, False, httpx.Headers()
    degraded = r.status_code == 200 and bool(r.json().get("degraded"))
    return r.status_code, r.text, degraded, r.headers


async def load(
    base: str, texts: list[str], clients: int, seconds: float, *, honour_retry_after: bool = True
) -> list[dict[str, Any]]:
    """A closed loop of ``clients``; a client answered 503 waits its Retry-After (as a
    well-behaved client does: without it the shed clients come back at once and the benchmark
    measures the server's accept loop, not search)."""
    records: list[dict[str, Any]] = []
    queue = iter(texts)
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one_client() -> None:
            while time.monotonic() < stop_at:
                q = next(queue, None)
                if q is None:
                    return
                t = time.monotonic()
                status, text, degraded, headers = await search_once(client, q)
                records.append(
                    {
                        "t": t,
                        "seconds": time.monotonic() - t,
                        "status": status,
                        "overloaded": "overloaded" in text,
                        "shed": "too many searches at once" in text,
                        "past_deadline": "did not finish within its deadline" in text,
                        "degraded": degraded,
                        "error": text[:120] if status not in (200, 503) else None,
                    }
                )
                if status == 503 and honour_retry_after:
                    await asyncio.sleep(float(headers.get("retry-after", "1")))

        async def ticker() -> None:  # this process's own lag: a busy client inflates latency
            while time.monotonic() < stop_at:
                t = time.monotonic()
                await asyncio.sleep(0.05)
                lags.append(time.monotonic() - t - 0.05)

        await asyncio.gather(ticker(), *(one_client() for _ in range(clients)))
    return records


def summarise(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for r in records:
        by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
    ok = [r["seconds"] for r in records if r["status"] == 200]
    shed = [r["seconds"] for r in records if r["overloaded"]]
    other = [r for r in records if r["status"] != 200 and not r["overloaded"]]
    slowest = max((r["seconds"] for r in records), default=0.0)
    return {
        "requests": len(records),
        "answered_per_s": round(len(ok) / seconds, 1),
        "by_status": by_status,
        "degraded": sum(r["degraded"] for r in records),
        "ok_ms": common.percentiles([s * 1000 for s in ok]),
        "overloaded_ms": common.percentiles([s * 1000 for s in shed]),
        "shed_at_admission": sum(r["shed"] for r in records),
        "shed_at_admission_ms": common.percentiles(
            [r["seconds"] * 1000 for r in records if r["shed"]]
        ),
        "past_deadline": sum(r["past_deadline"] for r in records),
        "past_deadline_ms": common.percentiles(
            [r["seconds"] * 1000 for r in records if r["past_deadline"]]
        ),
        "other_examples": sorted({str(r["error"]) for r in other})[:5],
        "other_failures": len(other),
        "slowest_ms": round(slowest * 1000, 1),
        "over_deadline_plus_100ms": sum(r["seconds"] > DEADLINE_S + SLACK_S for r in records),
        "target_met": slowest <= DEADLINE_S + SLACK_S and not other,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--no-retry-after", action="store_true", help="shed clients come back at once"
    )
    parser.add_argument("--driver", choices=("python", "wrk"), default="python")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "command": "python -m bench.search_overload " + " ".join(sys.argv[1:]),
        "clients": args.clients,
        "seconds": args.seconds,
        "deadline_ms": DEADLINE_S * 1000,
        "driver": args.driver,
        "retry_after": not args.no_retry_after,
    }
    if args.driver == "wrk" and not wrk_driver.available():
        raise SystemExit("wrk is not installed: make bench-tools")
    texts = query_lane.query_texts(200_000)
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        common.postgres() as url,
        common.fake_provider("--latency-ms", "20") as base,
    ):
        tmp = Path(tmp_name)
        e = common.fake_provider_env(
            url,
            base,
            tmp,
            CLIPEMBED_SEARCH_REQUESTS_PER_SECOND="0",
            CLIPEMBED_SEARCH_EMBEDS_PER_MINUTE="0",
        )
        common.clipembed("migrate", "up", env_vars=e)
        common.clipembed("import", str(DATA / "clips.jsonl.gz"), env_vars=e)
        common.clipembed("backfill", env_vars=e)
        with open(tmp / "serve.log", "w+") as log:
            try:
                with common.serving(e, log=log) as http:
                    # warm: the pools, the statistics, the HNSW pages (10 clients, 100 searches)
                    asyncio.run(load(http, texts[:100], 10, 30))
                    results["machine_load_at_start"] = common.load_averages()
                    lags.clear()
                    if args.driver == "wrk":
                        driven = wrk_driver.run(
                            http,
                            wrk_driver.search_paths(texts[100:]),
                            connections=args.clients,
                            seconds=args.seconds,
                            retry_after=not args.no_retry_after,
                        )
                        results.update(wrk_summary(driven))
                    else:
                        records = asyncio.run(
                            load(
                                http,
                                texts[100:],
                                args.clients,
                                args.seconds,
                                honour_retry_after=not args.no_retry_after,
                            )
                        )
                        results["client_loop_lag_ms"] = common.percentiles([x * 1000 for x in lags])
                        results.update(summarise(records, args.seconds))
            finally:
                log.seek(0)
                results["serve_errors"] = [ln for ln in log.read().splitlines() if "ERROR" in ln][
                    :5
                ]
    common.save("search_overload_wrk" if args.driver == "wrk" else "search_overload", results)


def wrk_summary(driven: dict[str, Any]) -> dict[str, Any]:
    """wrk's figures and the target: no response slower than the deadline + 100 ms, none lost
    (timed out, broken) and none answered other than 200 or 503."""
    statuses = driven["by_status"]
    odd = {k: v for k, v in statuses.items() if k != "200" and not k.startswith("503")}
    slowest = driven["latency_ms"]["max_ms"]
    lost = driven["timeouts"] + driven["connect_errors"] + driven["read_errors"]
    return {
        **driven,
        "answered_per_s": round(statuses.get("200", 0) / max(driven["seconds"], 1e-9), 1),
        "slowest_ms": slowest,
        "target_met": slowest <= (DEADLINE_S + SLACK_S) * 1000 and not odd and not lost,
    }


if __name__ == "__main__":
    main()
