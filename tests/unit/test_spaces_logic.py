"""Embedding spaces' pure parts: the settings a space embeds with, what a response says about it,
the state names, and the top-10 overlap of ``model compare``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import settings
from clipembed.search import compare
from clipembed.spaces import registry

CFG = settings.Settings(
    embedding_provider="openai",
    openai_api_key="sk-test-0123456789abcdef",
    embedding_model="text-embedding-3-small",
    embedding_dimensions=768,
    embedding_requests_per_minute=123,
)


def space(**kw) -> registry.Space:
    values = {
        "id": 2,
        "name": "cand",
        "provider": "openai",
        "model": "text-embedding-3-large",
        "dimensions": 256,
        "storage": "halfvec",
        "template_version": 1,
        "table_name": "embeddings_space_2",
    }
    values.update(kw)
    return registry.Space(**values)  # type: ignore[arg-type]


def test_a_space_embeds_with_its_own_model_and_the_environment_for_the_rest():
    cfg = space().settings_for(CFG)
    assert (cfg.embedding_provider, cfg.model, cfg.dimensions) == (
        "openai",
        "text-embedding-3-large",
        256,
    )
    assert cfg.embedding_requests_per_minute == 123  # limits and credentials are shared
    assert cfg.openai_api_key == CFG.openai_api_key
    assert cfg.price_per_million_tokens == 0.13  # the space's model's price, not the default's


def test_the_default_space_is_what_the_environment_configures():
    default = space(id=1, name="default", provider=None, model=None, dimensions=768)
    assert default.configured and default.settings_for(CFG) is CFG
    assert default.model_for(CFG) == "text-embedding-3-small"
    assert default.describe(CFG) == {
        "name": "default",
        "provider": "openai",
        "model": "text-embedding-3-small",
        "dimensions": 768,
        "storage": "halfvec",
    }


def test_a_local_space_with_a_path_loads_that_directory(tmp_path: Path):
    cfg = space(provider="local", model=str(tmp_path), dimensions=384).settings_for(CFG)
    assert cfg.embedding_local_model_path == tmp_path and cfg.embedding_provider == "local"
    named = space(provider="local", model="all-MiniLM-L6-v2", dimensions=384).settings_for(CFG)
    assert named.embedding_local_model_path is None and named.model == "all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("active", "previous", "state"),
    [(True, False, "active"), (False, True, "previous"), (False, False, "candidate")],
)
def test_states(active, previous, state):
    assert space(active=active, previous=previous).state == state


def test_index_name_follows_the_table():
    assert space().index_name == "embeddings_space_2_hnsw"


def test_overlap_counts_the_shared_top_10():
    a = list(range(10))
    assert compare.overlap_at(a, a) == 1.0
    assert compare.overlap_at(a, list(range(5, 15))) == 0.5
    assert compare.overlap_at(a, list(range(10, 20))) == 0.0
    assert compare.overlap_at([], []) == 1.0
    assert compare.overlap_at(list(range(20)), list(reversed(range(10)))) == 1.0  # order inside


@given(
    a=st.lists(st.integers(0, 30), unique=True, max_size=15),
    b=st.lists(st.integers(0, 30), unique=True, max_size=15),
)
def test_overlap_is_a_share_and_symmetric_for_full_lists(a, b):
    value = compare.overlap_at(a, b)
    assert 0.0 <= value <= 1.0
    if len(a) >= 10 and len(b) >= 10:
        assert value == compare.overlap_at(b, a)
