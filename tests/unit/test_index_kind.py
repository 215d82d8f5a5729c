"""A space's index kind (HNSW or IVFFlat): the lists for a table's rows, when a table has
outgrown them, the index's own options, the statement, the settings and the status block."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import settings
from clipembed.bulk import index_policy
from clipembed.search import core
from clipembed.status import model as status_model
from clipembed.store import space_table


def sql_text(composed) -> str:
    return composed.as_string(None)


@pytest.mark.parametrize(
    ("rows", "lists"),
    [(0, 1), (999, 1), (1_000, 1), (5_500, 5), (1_000_000, 1000), (4_000_000, 2000)],
)
def test_lists_follow_pgvectors_advice(rows, lists):
    assert space_table.ivfflat_lists(rows) == lists


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_lists_never_shrink_as_the_table_grows(a, b):
    small, large = sorted((a, b))
    assert 1 <= space_table.ivfflat_lists(small) <= space_table.ivfflat_lists(large)


@given(st.integers(0, 10**9))
def test_an_index_built_for_the_rows_there_is_never_outgrown(rows):
    """A fresh build is not stale, and it becomes stale once the table holds four times the
    rows its lists suit (rows / 1,000 lists up to a million, sqrt beyond)."""
    lists = space_table.ivfflat_lists(rows)
    assert not space_table.ivfflat_stale(lists, rows)
    assert space_table.ivfflat_stale(lists, 4 * space_table.ivfflat_rows(lists))


@pytest.mark.parametrize(
    ("lists", "rows", "stale"),
    [
        (1, 3_999, False),  # built on an empty table: one list, an exact scan
        (1, 4_000, True),
        (1000, 1_000_000, False),
        (1000, 3_999_999, False),
        (1000, 4_000_000, True),
        (2000, 15_999_999, False),  # past a million the lists suit their square
        (2000, 16_000_000, True),
    ],
)
def test_outgrown_at_four_times_the_rows_the_lists_suit(lists, rows, stale):
    assert space_table.ivfflat_stale(lists, rows) is stale


def test_index_options_are_read_from_reloptions():
    assert space_table.index_option(["lists=1000"], "lists", 100) == 1000
    assert space_table.index_option(["m=16", "ef_construction=64"], "lists", 100) == 100
    assert space_table.index_option(None, "lists", 100) == 100
    assert space_table.index_option(["lists=abc"], "lists", 100) == 100


def test_the_statement_for_each_kind():
    hnsw = sql_text(space_table.create_index("t", "t_hnsw", "halfvec"))
    assert "USING hnsw (embedding halfvec_cosine_ops)" in hnsw
    assert "m = 16, ef_construction = 64" in hnsw
    ivf = space_table.IndexBuild(kind="ivfflat")
    from_rows = sql_text(space_table.create_index("t", "t_hnsw", "vector", ivf, 250_000))
    assert 'ON "t" USING ivfflat (embedding vector_cosine_ops) WITH (lists = 250)' in from_rows
    fixed = space_table.IndexBuild(kind="ivfflat", lists=64)
    assert "WITH (lists = 64)" in sql_text(
        space_table.create_index("t", "t_hnsw", "halfvec", fixed, 250_000)
    )


def test_settings_choose_the_kind_and_refuse_others():
    cfg = settings.Settings(
        _env_file=None, clipembed_index_kind="ivfflat", clipembed_ivfflat_lists=500
    )
    build = index_policy.index_build(cfg)
    assert (build.kind, build.lists, build.m) == ("ivfflat", 500, 16)
    assert index_policy.index_build(settings.Settings(_env_file=None)).kind == "auto"
    with pytest.raises(pydantic.ValidationError, match="clipembed_index_kind"):
        settings.Settings(_env_file=None, clipembed_index_kind="diskann")


def test_an_ivfflat_builds_memory_is_its_sample_not_a_graph():
    """pgvector's k-means samples 50 rows a list: a million halfvec(768) rows with 1,000 lists
    need ~150 MB, where their HNSW graph needs ~2.3 GB."""
    ivf = index_policy.ivfflat_sample_bytes(1_000_000, 768)
    assert 150e6 < ivf < 160e6
    assert index_policy.graph_bytes(1_000_000, 768, "halfvec") > 10 * ivf


def test_the_status_block_names_the_kind_and_an_outgrown_index():
    row = (8192, "CREATE INDEX ...", "ivfflat", ["lists=3"])
    block = status_model._index(row, None, 12_000)
    assert block["type"] == "ivfflat" and block["lists"] == 3 and block["outgrown"] is True
    assert "ef_search" not in block and block["probes"] >= 1
    fresh = status_model._index(row, None, 3_000)
    assert fresh["outgrown"] is False
    hnsw = status_model._index((8192, "CREATE INDEX ...", "hnsw", ["m=16"]), None, 10**6)
    assert hnsw["type"] == "hnsw" and "ef_search" in hnsw and "lists" not in hnsw
    missing = status_model._index(None, None, 0)
    assert missing["exists"] is False and missing["type"] == "hnsw"


def test_probes_by_mode_unless_asked():
    """Semantic mode and similar clips scan DEFAULT_PROBES lists; hybrid, whose vector ranking
    the keyword branch's candidates complete, scans HYBRID_PROBES; an explicit value wins."""
    assert core.probes_for(core.Params(mode="semantic")) == core.DEFAULT_PROBES
    assert core.probes_for(core.Params(mode="hybrid")) == core.HYBRID_PROBES
    assert core.HYBRID_PROBES < core.DEFAULT_PROBES
    assert core.probes_for(core.Params(mode="hybrid", probes=40)) == 40
    assert core.probes_for(core.Params(mode="semantic", probes=0)) == 1


def test_auto_is_hnsw_for_a_small_build_and_ivfflat_for_a_large_one():
    auto = space_table.IndexBuild(kind="auto", lists=0, m=24)
    edge = space_table.AUTO_IVFFLAT_MIN_ROWS
    assert auto.for_rows(0).kind == "hnsw"  # a space made empty, grown by the workers
    assert auto.for_rows(edge - 1) == dataclasses.replace(auto, kind="hnsw")  # m kept
    assert auto.for_rows(edge).kind == "ivfflat"
    assert (auto.trains_on(edge - 1), auto.trains_on(edge)) == (False, True)
    for kind in ("hnsw", "ivfflat"):  # a kind asked for is kept at any size
        build = space_table.IndexBuild(kind=kind)  # type: ignore[arg-type]
        assert build.for_rows(0) is build and build.for_rows(10 * edge) is build
    small = sql_text(space_table.create_index("t", "t_hnsw", "halfvec", auto, 1_000))
    assert "USING hnsw" in small and "m = 24" in small
    large = sql_text(space_table.create_index("t", "t_hnsw", "halfvec", auto, 4 * edge))
    assert (
        "USING ivfflat (embedding halfvec_cosine_ops) WITH (lists = 800)" in large
    )  # 800,000 / 1,000
