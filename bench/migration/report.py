"""The results file of ``bench.model_migration``: every figure the run measured, and its targets."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.migration.analysis import effect, latency, pct, possible, reasons, series
from bench.migration.constants import (
    CAND,
    CAND_DIMS,
    CAND_MODEL,
    CAND_STORAGE,
)
from bench.migration.cpu import Cpu
from bench.migration.load import Load


def build(
    args: argparse.Namespace,
    *,
    command: str,
    wall: float,
    prepared: dict[str, Any],
    load: Load,
    searches: list[dict[str, Any]],
    marks: dict[str, float],
    snaps: dict[str, dict[str, float]],
    steps: dict[str, Any],
    switches: list[dict[str, Any]],
    scores: dict[str, Any],
    inserted: dict[str, Any],
    final_coverage: dict[str, Any],
    worker_stats: list[Any],
    fake_stats: dict[str, Any],
) -> dict[str, Any]:
    """The run's result: load achieved, searches by status, space and phase, the one-space
    check, coverage at promote, each switch's effect, CPU, and the targets met or not."""
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
    return {
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
