"""The cache's pure parts: keys, binary values, redaction (no Redis is contacted)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clipembed.embedding import cache


def make(dimensions: int = 4, prefix: str = "t:") -> cache.EmbeddingCache:
    # redis-py connects lazily: building the link opens no socket
    link = cache.RedisLink("redis://127.0.0.1:1/0")
    return cache.EmbeddingCache(
        link, prefix=prefix, model="text-embedding-3-small", dimensions=dimensions, ttl_seconds=60
    )


def test_key_is_the_originals_plus_prefix_and_dimensions():
    digest = hashlib.sha256(b"text-embedding-3-small:Title: x").hexdigest()
    assert make(768, "p:").key("Title: x") == f"p:embedding:{digest}:768"


def test_dimensions_and_model_separate_keys():
    assert make(768).key("x") != make(384).key("x")
    other = make(768)
    other.model = "text-embedding-3-large"
    assert other.key("x") != make(768).key("x")


@given(
    hnp.arrays(np.float32, 8, elements=st.floats(allow_nan=False, allow_infinity=False, width=32))
)
def test_values_round_trip_exactly(vec):
    c = make(8)
    raw = np.asarray(vec, dtype="<f4").tobytes()
    assert len(raw) == 8 * 4  # float32: 4 bytes a value
    decoded = c._decode(raw)
    assert decoded is not None and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, vec)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"\x00" * 15,  # one byte short
        b"\x00" * 17,
        np.ones(5, "<f4").tobytes(),  # another dimension's vector
        np.array([1, np.nan, 0, 0], "<f4").tobytes(),
        np.array([1, np.inf, 0, 0], "<f4").tobytes(),
        "a string",
        b"[0.1, 0.2, 0.3, 0.4]",  # JSON from some other writer
    ],
)
def test_a_corrupt_value_is_a_miss_never_a_vector(raw):
    assert make(4)._decode(raw) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:hunter2@host/0", "redis://user:***@host/0"),
        ("rediss://default:p%40ss@h:1", "rediss://default:***@h:1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
    ],
)
def test_redact(url, shown):
    assert cache.redact(url) == shown
    assert (
        "hunter2" not in repr(cache.RedisLink(url)) if "://" in url and "unix" not in url else True
    )
