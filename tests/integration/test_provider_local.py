"""The bundled local model: real encode, offline."""

from __future__ import annotations

import numpy as np
import pytest

from clipembed import errors, providers, settings

pytestmark = pytest.mark.local_model


async def test_embeds_normalised_384_dims_for_any_script(local_provider):
    texts = ["Insane clutch!", "神プレイすぎる", "레전드 클러치", "🔥🔥🔥"]
    resp = await local_provider.embed(texts)
    assert resp.vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(resp.vectors, axis=1), 1.0, rtol=1e-5)
    assert resp.tokens > 0


async def test_similar_texts_are_closer(local_provider):
    resp = await local_provider.embed(
        ["amazing headshot in counter strike", "great CS:GO aim", "cooking pasta"]
    )
    v = resp.vectors
    assert v[0] @ v[1] > v[0] @ v[2]


def test_truncates_by_the_model_tokenizer(local_provider):
    long = "clutch " * 10_000
    cut = local_provider.truncate(long)
    assert long.startswith(cut) and len(cut) < len(long)
    assert local_provider.count_tokens(cut) <= 256
    texts, counts = local_provider.prepare_batch([long, "short"])
    assert texts[1] == "short" and counts[0] <= 256


def test_dimensions_other_than_the_models_are_a_configuration_error(tmp_path):
    cfg = settings.Settings(
        _env_file=None, embedding_provider="local", embedding_dimensions=768, redis_url="none"
    )
    with pytest.raises(errors.ConfigurationError, match="384"):
        providers.create(cfg)


def test_missing_model_path_is_a_configuration_error():
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        embedding_model="/nonexistent/model",
        redis_url="none",
    )
    with pytest.raises(errors.ConfigurationError, match="EMBEDDING_MODEL"):
        providers.create(cfg)
