from __future__ import annotations

import math

import pytest

from clipembed.eval import beir, metrics


def test_ndcg_hand_computed():
    rel = {"a": 1, "b": 1}
    assert metrics.ndcg_at(["a", "b", "c"], rel) == pytest.approx(1.0)
    # relevant at ranks 2 and 3: (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3))
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at(["x", "a", "b"], rel) == pytest.approx(expected)
    assert metrics.ndcg_at(["x", "y"], rel) == 0.0
    assert metrics.ndcg_at(["a"] + ["x"] * 20, {"a": 2, "b": 1}, k=10) == pytest.approx(
        2 / (2 + 1 / math.log2(3))
    )


def test_recall_hand_computed():
    rel = {"a": 1, "b": 1, "c": 0}
    assert metrics.recall_at(["a", "x"], rel, 100) == 0.5
    assert metrics.recall_at(["x"] * 100 + ["a"], rel, 100) == 0.0
    assert metrics.recall_at([], {}, 100) == 0.0


def test_load_reads_the_beir_layout():
    from tests.conftest import ROOT

    data = beir.load(ROOT / "tests" / "fixtures" / "beir_small")
    assert len(data.corpus) == 8 and data.corpus["d3"][0] == "Sleep and memory"
    assert set(data.queries) == {"q1", "q2", "q3"}  # unjudged queries are dropped
    assert data.qrels["q1"] == {"d1": 1, "d8": 1}
