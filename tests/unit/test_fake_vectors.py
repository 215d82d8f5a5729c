"""The fake provider's vectors: deterministic, unit-norm; ``words`` gives texts sharing words
nearby vectors (the benchmarks' recall needs structure), ``hash`` stays what tests compare."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clipembed.testing.fakeopenai import expected_vector, vector_for


def test_hash_mode_is_the_vector_tests_compare_with():
    assert np.array_equal(vector_for("a clip", 64), expected_vector("a clip", 64))


def test_words_mode_puts_texts_sharing_words_near_each_other():
    a = vector_for("insane clutch valorant ace", 384, "words")
    b = vector_for("Valorant ace, clutch!", 384, "words")
    c = vector_for("minecraft speedrun world record", 384, "words")
    assert float(a @ b) > 0.7 > 0.2 > abs(float(a @ c))
    # a run of CJK characters counts as its bigrams: one shared bigram brings texts closer
    ja, ja2 = (vector_for(t, 384, "words") for t in ("神プレイ", "神プレー"))
    assert float(ja @ ja2) > abs(float(ja @ c))


@settings(max_examples=100)
@given(st.text(max_size=200))
def test_words_vectors_are_deterministic_unit_vectors(text):
    v = vector_for(text, 32, "words")
    assert v.dtype == np.float32 and v.shape == (32,)
    assert abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert np.array_equal(v, vector_for(text, 32, "words"))
