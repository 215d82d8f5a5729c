"""The backfill's pure parts: the staleness rule, the summary, exit codes, the index choice."""

from __future__ import annotations

import json
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipembed import clips
from clipembed.bulk import backfill, index_policy, pipeline, report
from clipembed.embedding.service import EmbedStats

MODEL = "text-embedding-3-small"
TEXT = clips.embedding_text(clips.ClipText("t", "b", "c", "g"))
HASH = clips.content_hash(TEXT, MODEL, 768)


def row(**overrides):
    base = {"missing": False, "embedding_model": MODEL, "embedding_content_hash": HASH}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("stored", "force", "expected"),
    [
        (row(), False, False),  # current: skipped
        (row(), True, True),  # --force re-embeds all
        (row(missing=True), False, True),
        # another model: its hash differs (the model is hashed with the text and dimensions)
        (
            row(embedding_content_hash=clips.content_hash(TEXT, "text-embedding-3-large", 768)),
            False,
            True,
        ),
        (row(embedding_content_hash=None), False, True),
        (row(embedding_content_hash=clips.content_hash(TEXT, MODEL, 384)), False, True),
        (row(embedding_content_hash=clips.content_hash(TEXT + "!", MODEL, 768)), False, True),
        (row(embedding_content_hash=memoryview(HASH)), False, False),  # as psycopg returns bytea
    ],
)
def test_staleness_rule(stored, force, expected):
    assert pipeline.needs_embedding(stored, content_hash=HASH, force=force) is expected


clip_fields = st.builds(
    clips.ClipText,
    title=st.text(max_size=80),
    # the importer rejects a broadcaster that sanitises to nothing (tested there)
    broadcaster_name=st.text(min_size=1, max_size=30).filter(lambda b: clips.sanitize(b) != ""),
    creator_name=st.none() | st.text(max_size=30),
    game_name=st.none() | st.text(max_size=30),
)


@given(clip_fields)
def test_hashed_text_is_already_what_the_service_prepares(clip):
    # Every writer hashes embedding_text(); the service caches and sends sanitize(text). They
    # should be the same string, so the cached/stored vector is the vector of the hashed text.
    text = clips.embedding_text(clip)
    assert clips.sanitize(text) == text


def test_summary_lines_have_the_originals_fields_and_ours():
    s = backfill.Summary(
        total=10,
        processed=7,
        skipped=2,
        failed=1,
        duration=3.5,
        last_error="boom",
        embedding=EmbedStats(requests=3, tokens=1234, cache_hits=1, cache_misses=3),
        estimated_cost_usd=0.0000247,
    )
    text = "\n".join(s.lines())
    for label in (
        "Total:",
        "Processed:",
        "Skipped:",
        "Failed:",
        "Duration:",
        "Average per clip:",
        "Last error:",
        "API requests:",
        "Tokens:",
        "Cache hit rate:",
        "Estimated cost:",
    ):
        assert label in text
    assert "500.00 ms" in text  # 3.5 s / 7 clips
    assert "25.0%" in text and "boom" in text


def test_summary_json_is_one_serialisable_object_with_derived_numbers():
    s = backfill.Summary(
        processed=4, duration=2.0, embedding=EmbedStats(cache_hits=3, cache_misses=1)
    )
    data = json.loads(json.dumps(s.as_dict()))
    assert data["average_ms_per_clip"] == 500.0
    assert data["cache_hit_rate"] == 0.75
    assert {"total", "processed", "skipped", "failed", "requests", "tokens"} <= data.keys()


def test_zero_clips_gives_zero_averages_not_a_division_error():
    s = backfill.Summary()
    assert s.average_ms == 0.0 and s.embedding.cache_hit_rate == 0.0
    assert "0.00 ms" in "\n".join(s.lines())


def test_dry_run_lines_estimate_and_say_nothing_was_sent():
    s = backfill.Summary(
        dry_run=True, would_embed=5, embedding=EmbedStats(tokens=50), estimated_seconds=90.0
    )
    text = "\n".join(s.lines())
    assert "nothing sent" in text and "Would embed:      5" in text and "1m30.0s" in text
    assert "n/a" in "\n".join(backfill.Summary(dry_run=True).lines())


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.5, "0.50s"), (59.99, "59.99s"), (61, "1m01.0s"), (3725, "1h02m05.0s")]
)
def test_duration_format(seconds, shown):
    assert report.duration(seconds) == shown


@pytest.mark.parametrize(
    ("summary", "code"),
    [
        (backfill.Summary(processed=3), 0),
        (backfill.Summary(), 0),
        (backfill.Summary(processed=3, failed=1), 1),
        (backfill.Summary(processed=3, interrupted=True), 1),
    ],
)
def test_exit_code(summary, code):
    assert backfill.exit_code(summary) == code


def fake_service(*, parallel: bool, max_inputs: int = 2048):
    capabilities = types.SimpleNamespace(parallel_requests=parallel)
    provider = types.SimpleNamespace(capabilities=capabilities, max_inputs_per_request=max_inputs)
    return types.SimpleNamespace(provider=provider)


@pytest.mark.parametrize(
    ("parallel", "rpm", "batch", "expected"),
    [
        (False, 1, 50, True),  # a local model competes with PostgreSQL for the cores
        (True, 3000, 50, True),  # 2,500 clips/s allowed: the database would be the bottleneck
        (True, 300, 100, False),  # 500 clips/s: the index keeps up while waiting for the limit
        (True, 1200, 50, True),  # exactly 1,000 clips/s
    ],
)
def test_index_rebuild_only_when_the_database_would_bind(parallel, rpm, batch, expected):
    service = fake_service(parallel=parallel)
    assert index_policy.load_outpaces_index(service, rpm, batch) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "live", "expected_rows", "outpaces", "rebuild"),
    [
        ("rebuild", 10, 1, False, True),
        ("keep", 100_000, 100_000, True, False),
        ("auto", 100_000, 60_000, True, True),
        ("auto", 100_000, 40_000, True, False),  # most clips already embedded
        ("auto", 500, 500, True, False),  # a small table: keep the index for live search
        ("auto", 100_000, 100_000, False, False),  # the provider binds, the index keeps up
    ],
)
def test_index_rebuild_decision(mode, live, expected_rows, outpaces, rebuild):
    assert (
        index_policy.wants_rebuild(mode, live=live, expected=expected_rows, outpaces=outpaces)
        is rebuild
    )


def probe_after(batches, *, embed, write, live=100_000, remaining=100_000, rows=50, seconds=6.0,
                dimensions=1536, ceiling=417.0):  # fmt: skip
    """A probe whose first window saw ``batches`` batches complete over ``seconds`` (after the
    one that opens it)."""
    probe = index_policy.Probe(live=live, remaining=remaining, dimensions=dimensions,
                               ceiling=ceiling)  # fmt: skip
    probe.add(rows, embed_seconds=embed, write_seconds=write, at=0.0)
    for i in range(batches):
        probe.add(rows, embed_seconds=embed, write_seconds=write, at=seconds * (i + 1) / batches)
    return probe


def test_probe_waits_for_enough_batches_and_time():
    assert probe_after(index_policy.PROBE_BATCHES - 1, embed=0.1, write=1.0).verdict(60) is None
    assert probe_after(index_policy.PROBE_BATCHES, embed=0.1, write=1.0).verdict(0.5) is None
    assert index_policy.Probe(live=1, remaining=1, dimensions=8).verdict(60) is None  # no batch


def test_probe_drops_the_index_when_that_is_sooner_and_answers_once():
    # a million clips at 100 clips/s with half of each batch writing, the limit allows 417
    probe = probe_after(6, embed=0.3, write=0.3, rows=100, seconds=6.0, live=1_000_000,
                        remaining=1_000_000, dimensions=768)  # fmt: skip
    assert probe.verdict(6.0) is True
    assert "100 clips/s" in probe.reason and "drop the index" in probe.reason
    assert probe.verdict(60) is None  # decided: nobody drops it twice


def test_probe_keeps_watching_and_drops_once_the_graph_slows_the_load():
    probe = probe_after(6, embed=0.4, write=0.1, rows=400, seconds=6.0, live=1_000_000,
                        remaining=1_000_000, dimensions=768)  # fmt: skip
    assert probe.verdict(6.0) is False  # 400 clips/s against a 417 ceiling: keep
    assert "keep the index" in probe.reason
    for i in range(6):  # the next window: 100 clips/s, the database the bound
        probe.add(100, embed_seconds=0.2, write_seconds=0.6, at=6.0 + i + 1)
    assert probe.verdict(12.0) is True


@pytest.mark.parametrize(
    ("embed", "write", "rows", "live", "remaining", "dimensions", "drop"),
    [
        # the 20,000-clip default load measured here: 385 clips/s kept, 21 % writing, limit 417:
        # kept ~49 s, dropped ~45 s + a 20 s build: keep
        (0.4, 0.1, 385, 20_000, 20_000, 1536, False),
        # the same rate at a million: the build is cheap beside what the index costs: keep
        (0.4, 0.1, 385, 1_000_000, 1_000_000, 768, False),
        # the database binds at a million: drop
        (0.2, 0.4, 150, 1_000_000, 1_000_000, 768, True),
        # most clips already embedded: the build of all of them does not pay
        (0.2, 0.4, 150, 1_000_000, 30_000, 768, False),
        # nothing left to speak of
        (0.2, 0.4, 150, 100_000, 1_000, 768, False),
    ],
)
def test_probe_decision(embed, write, rows, live, remaining, dimensions, drop):
    probe = probe_after(6, embed=embed, write=write, rows=rows, seconds=6.0, live=live,
                        remaining=remaining, dimensions=dimensions)  # fmt: skip
    assert probe.verdict(6.0) is drop


@settings(max_examples=300)
@given(
    embed=st.floats(0, 10, allow_nan=False),
    write=st.floats(0, 10, allow_nan=False),
    rows=st.integers(1, 2_000),
    remaining=st.integers(0, 10**7),
    ceiling=st.one_of(st.none(), st.floats(1, 10_000)),
)
def test_probe_drops_only_when_its_estimate_is_sooner(embed, write, rows, remaining, ceiling):
    probe = probe_after(6, embed=embed, write=write, rows=rows, remaining=remaining,
                        ceiling=ceiling)  # fmt: skip
    left = max(remaining - 7 * rows, 0)
    kept, dropped = index_policy.to_searchable(
        left=left, live=100_000, dimensions=1536, rate=rows, write_share=probe.write_share,
        ceiling=ceiling,
    )  # fmt: skip
    if probe.verdict(6.0):
        assert left >= index_policy.REBUILD_MIN_ROWS
        assert dropped <= kept * (1 - index_policy.DROP_MARGIN)
        assert write > 0  # a load with no database time never pays for a rebuild
        assert ceiling is None or ceiling > rows


def test_time_to_searchable_hand_computed():
    # 10,000 left at 100 clips/s, half writing: 100 s kept; dropped at min(200, ceiling 150)
    # clips/s = 66.7 s, plus 100,000 x 768 / 1.5 M = 51.2 s of build
    kept, dropped = index_policy.to_searchable(
        left=10_000, live=100_000, dimensions=768, rate=100, write_share=0.5, ceiling=150
    )
    assert kept == pytest.approx(100.0)
    assert dropped == pytest.approx(10_000 / 150 + 51.2)


def test_build_memory_is_what_the_graph_needs_within_the_cap_never_below_the_server():
    mb = 2**20
    needed = index_policy.graph_bytes(1_000_000, 768, "halfvec")
    assert 2_000 * mb < needed < 3_000 * mb  # a million halfvec(768) rows: ~2.4 GB
    assert index_policy.graph_bytes(1_000_000, 768, "vector") > needed
    assert index_policy.build_memory_mb(needed=needed, server=64 * mb, cap_mb=8192) == -(
        -needed // mb
    )
    assert index_policy.build_memory_mb(needed=needed, server=64 * mb, cap_mb=1024) == 1024
    # the DBA's larger maintenance_work_mem stands; a tiny graph still gets 64 MB
    assert index_policy.build_memory_mb(needed=needed, server=8192 * mb, cap_mb=1024) == 8192
    assert index_policy.build_memory_mb(needed=1000, server=0, cap_mb=1024) == 64
