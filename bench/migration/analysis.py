"""After the run: latency per phase, failure reasons, the one-space check of every semantic score, the effect of each switch, the inserted clips."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from bench import common
from bench.migration.constants import (
    SCORE_TOLERANCE,
)
from clipembed import clips as clips_mod
from clipembed.testing.fakeopenai.protocol import expected_vector


# --- analysis ----------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    v = common.quantile(values, q)
    return None if v is None else round(v, 1)


def latency(records: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [(r["end"] - r["start"]) * 1000 for r in records if r["status"] == 200]
    return {
        "searches": len(records),
        "ok": len(ms),
        "p50_ms": pct(ms, 0.50),
        "p95_ms": pct(ms, 0.95),
        "p99_ms": pct(ms, 0.99),
        "max_ms": round(max(ms), 1) if ms else None,
    }


def reasons(failed: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in failed:
        err = r.get("error", "")
        if r["status"] == 0:
            key = "client timeout" if "Timeout" in err else "connection error"
        elif "database is unavailable" in err:
            key = "503 database unavailable (search pool timeout)"
        elif "semantic search is unavailable" in err:
            key = "503 semantic unavailable (query embedding missed its deadline)"
        else:
            key = f"{r['status']} {err[:60]}"
        out[key] = out.get(key, 0) + 1
    return out


def series(searches: list[dict[str, Any]], origin: float, step: float) -> list[dict[str, Any]]:
    """Latency and spaces per ``step`` seconds of request start (the backlog over time)."""
    buckets: dict[int, list[dict[str, Any]]] = {}
    for r in searches:
        buckets.setdefault(int((r["start"] - origin) // step), []).append(r)
    out = []
    for k in sorted(buckets):
        rs = buckets[k]
        lat = latency(rs)
        spaces: dict[str, int] = {}
        for r in rs:
            if r["status"] == 200:
                spaces[r["space"]] = spaces.get(r["space"], 0) + 1
        out.append(
            {
                "t_s": round(k * step),
                "n": len(rs),
                "failed": sum(1 for r in rs if r["status"] != 200),
                "p50_ms": lat["p50_ms"],
                "p95_ms": lat["p95_ms"],
                "spaces": spaces,
            }
        )
    return out


def vectors(
    url: str, tables: dict[str, str], wanted: dict[str, set[str]]
) -> dict[tuple[str, str], np.ndarray]:
    out: dict[tuple[str, str], np.ndarray] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for space, ids in wanted.items():
            if not ids:
                continue
            rows = conn.execute(
                f"SELECT clip_id::text, embedding::vector::real[] FROM {tables[space]}"
                " WHERE clip_id = ANY(%s::uuid[])",
                (sorted(ids),),
            ).fetchall()
            for cid, vec in rows:
                out[(space, cid)] = np.asarray(vec, dtype=np.float64)
    return out


def query_vector(text: str, space: dict[str, Any]) -> np.ndarray:
    """What the space's search compares with: the fake's vector, in the space's precision."""
    q = expected_vector(text, space["dimensions"])
    if space["storage"] == "halfvec":
        q = q.astype(np.float16)
    return q.astype(np.float64)


def check_scores(
    url: str, searches: list[dict[str, Any]], spaces: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Each semantic score against the cosine in the space the response names."""
    wanted: dict[str, set[str]] = {name: set() for name in spaces}
    for r in searches:
        if r["status"] == 200:
            wanted.setdefault(r["space"], set()).update(cid for cid, _ in r["hits"])
    unknown = sorted(set(wanted) - set(spaces))
    vecs = vectors(url, {n: s["table"] for n, s in spaces.items()}, {n: wanted[n] for n in spaces})
    qcache: dict[tuple[str, str], np.ndarray] = {}
    checked = top_checked = mismatched = top_mismatched = missing = wrong_dims = 0
    worst = 0.0
    examples: list[dict[str, Any]] = []
    for r in searches:
        if r["status"] != 200:
            continue
        space = spaces.get(r["space"])
        if space is None:
            mismatched += 1
            continue
        if r["dims"] != space["dimensions"]:
            wrong_dims += 1
        key = (r["q"], r["space"])
        if key not in qcache:
            qcache[key] = query_vector(r["q"], space)
        q = qcache[key]
        bad = False
        for k, (cid, score) in enumerate(r["hits"]):
            v = vecs.get((r["space"], cid))
            if v is None:
                missing += 1
                bad = True
                continue
            cos = float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v)))
            diff = abs(cos - score)
            worst = max(worst, diff)
            checked += 1
            top_checked += k == 0
            if diff > SCORE_TOLERANCE:
                bad = True
                top_mismatched += k == 0
                if len(examples) < 5:
                    examples.append(
                        {"q": r["q"], "space": r["space"], "clip": cid, "score": score, "cos": cos}
                    )
        mismatched += bad
    # the check must be able to fail: the same hits scored with another query's vector
    control = 0
    for r in searches[:200]:
        if r["status"] == 200 and r["hits"] and r["space"] in spaces:
            cid, score = r["hits"][0]
            v = vecs.get((r["space"], cid))
            if v is not None:
                q = query_vector(r["q"] + " x", spaces[r["space"]])
                control += abs(float(q @ v / np.linalg.norm(q) / np.linalg.norm(v)) - score) > (
                    SCORE_TOLERANCE
                )
    return {
        "responses_with_semantic_hits": sum(
            1 for r in searches if r["status"] == 200 and r["hits"]
        ),
        "scores_checked": checked,
        "top_hits_checked": top_checked,
        "responses_mismatched": mismatched,
        "top_hit_mismatches": top_mismatched,
        "hits_without_vector_in_named_space": missing,
        "responses_with_wrong_dimensions": wrong_dims,
        "unknown_space_names": unknown,
        "max_abs_score_error": float(f"{worst:.3g}"),
        "tolerance": SCORE_TOLERANCE,
        "control_wrong_query_detected_of_200": control,
        "examples": examples,
    }


def possible(start: float, end: float, switches: list[dict[str, Any]], first: str) -> set[str]:
    """The spaces that may have been active at some moment of [start, end].

    A switch committed somewhere between its command's launch and the moment it printed so.
    """
    out = set()
    current = first
    lo = float("-inf")
    for sw in switches:
        if start <= sw["marked"] and end >= lo:  # [start, end] meets the segment before it
            out.add(current)
        lo = sw["launched"]
        current = sw["new"]
    if end >= lo:
        out.add(current)
    return out


def effect(searches: list[dict[str, Any]], sw: dict[str, Any], until: float) -> dict[str, Any]:
    """How the switch showed in the answers (``until``: the next switch's launch)."""
    at, new, old = sw["marked"], sw["new"], sw["old"]
    ok = [r for r in searches if r["status"] == 200]
    after = [r for r in ok if at <= r["start"] and r["end"] < until]
    first_new = min((r["end"] for r in ok if r["space"] == new and r["end"] >= at), default=None)
    first_sent = min((r for r in ok if r["start"] >= at), key=lambda r: r["start"], default=None)
    near = [r for r in ok if at - 5 <= r["start"] < at + 5]
    return {
        "commit_to_first_response_from_new_ms": round((first_new - at) * 1000, 1)
        if first_new
        else None,
        "first_request_sent_after_commit": {
            "sent_ms_after_commit": round((first_sent["start"] - at) * 1000, 1),
            "answered_by": first_sent["space"],
            "latency_ms": round((first_sent["end"] - first_sent["start"]) * 1000, 1),
        }
        if first_sent
        else None,
        "requests_sent_after_commit_answered": len(after),
        "requests_sent_after_commit_answered_by_old": sum(1 for r in after if r["space"] == old),
        "requests_sent_before_commit_answered_by_new": sum(
            1 for r in ok if r["start"] < sw["launched"] and r["space"] == new and r["end"] > at
        ),
        "search_latency_p50_ms_around_commit": latency(near)["p50_ms"],
    }


def verify_inserted(
    url: str, inserted: list[str], spaces: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Every clip inserted during the run has the right vector (and hash) in every space."""
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, title, broadcaster_name, creator_name, game_name FROM clips"
            " WHERE twitch_clip_id = ANY(%s)",
            (inserted,),
        ).fetchall()
        texts = {
            r[0]: clips_mod.embedding_text(
                clips_mod.ClipText(
                    title=r[1], broadcaster_name=r[2], creator_name=r[3], game_name=r[4]
                )
            )
            for r in rows
        }
        for name, s in spaces.items():
            got = conn.execute(
                f"SELECT clip_id::text, embedding::vector::real[], content_hash, model"
                f" FROM {s['table']} WHERE clip_id = ANY(%s::uuid[])",
                (list(texts),),
            ).fetchall()
            wrong_vec = wrong_hash = 0
            for cid, vec, chash, model in got:
                want = expected_vector(texts[cid], s["dimensions"])
                if np.max(np.abs(np.asarray(vec) - want)) > SCORE_TOLERANCE:
                    wrong_vec += 1
                if bytes(chash) != clips_mod.content_hash(texts[cid], model, s["dimensions"]):
                    wrong_hash += 1
            out[name] = {
                "inserted": len(texts),
                "with_vector": len(got),
                "wrong_vector": wrong_vec,
                "wrong_content_hash": wrong_hash,
            }
    return out
