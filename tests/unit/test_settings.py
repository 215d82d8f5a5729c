from __future__ import annotations

import pytest

from clipembed import errors, settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in [
        "OPENAI_API_KEY",
        "EMBEDDING_PROVIDER",
        "EMBEDDING_MODEL",
        "EMBEDDING_DIMENSIONS",
        "EMBEDDING_BATCH_SIZE",
        "EMBEDDING_API_BASE_URL",
        "OPENAI_BASE_URL",
        "DATABASE_URL",
    ]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_openai_defaults(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    cfg = settings.load()
    assert cfg.model == "text-embedding-3-small"
    assert cfg.dimensions == 768
    assert cfg.embedding_batch_size == 100
    assert cfg.cache_ttl_seconds == 30 * 24 * 3600
    assert cfg.price_per_million_tokens == 0.02
    assert "sk-test-secret" not in repr(cfg)
    assert "sk-test-secret" not in str(cfg.model_dump())


def test_local_defaults(monkeypatch):
    monkeypatch.setenv("EMBEDDING_PROVIDER", "local")
    cfg = settings.load()
    assert cfg.model == "all-MiniLM-L6-v2"
    assert cfg.dimensions is None
    assert cfg.price_per_million_tokens == 0.0


def test_openai_base_url_alias(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert settings.load().embedding_api_base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"OPENAI_API_KEY": "k", "EMBEDDING_DIMENSIONS": "2000"},
            "more than text-embedding-3-small",
        ),
        ({"OPENAI_API_KEY": "k", "EMBEDDING_MODEL": "text-embedding-ada-002"}, "impossible"),
        ({"OPENAI_API_KEY": "k", "EMBEDDING_BATCH_SIZE": "0"}, "EMBEDDING_BATCH_SIZE"),
        ({"OPENAI_API_KEY": "k", "EMBEDDING_BATCH_SIZE": "2049"}, "EMBEDDING_BATCH_SIZE"),
        ({"OPENAI_API_KEY": "k", "EMBEDDING_PROVIDER": "cohere"}, "EMBEDDING_PROVIDER"),
        (
            {"CLIPEMBED_HNSW_M": "32", "CLIPEMBED_HNSW_EF_CONSTRUCTION": "63"},
            "at least twice CLIPEMBED_HNSW_M",
        ),
        ({"CLIPEMBED_HNSW_M": "101"}, "CLIPEMBED_HNSW_M"),
    ],
)
def test_invalid_configuration_is_one_clear_line(monkeypatch, env, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(errors.ConfigurationError) as info:
        settings.load()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_the_api_key_is_asked_for_only_where_the_provider_is_called(monkeypatch):
    """Least privilege: migrate, stats, admin... load settings without OPENAI_API_KEY."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = settings.load()
    assert cfg.embedding_provider == "openai"
    with pytest.raises(errors.ConfigurationError, match="OPENAI_API_KEY is required"):
        cfg.require_provider_credentials()
    from clipembed.embedding import providers

    with pytest.raises(errors.ConfigurationError, match="OPENAI_API_KEY is required"):
        providers.create(cfg)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    settings.load().require_provider_credentials()


def test_env_example_is_a_valid_env_file(tmp_path, monkeypatch):
    from tests.conftest import ROOT

    text = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(
        text.replace("OPENAI_API_KEY=\n", "OPENAI_API_KEY=sk-from-env-file\n")
    )
    cfg = settings.load()
    assert cfg.openai_api_key is not None
    assert cfg.openai_api_key.get_secret_value() == "sk-from-env-file"
    assert cfg.dimensions == 768
    assert cfg.redis_url_value == "redis://127.0.0.1:6379/0"


def test_env_example_documents_every_setting():
    from tests.conftest import ROOT

    text = (ROOT / ".env.example").read_text()
    for name, field in settings.Settings.model_fields.items():
        alias = field.validation_alias
        names = {name.upper()}
        if alias is not None:
            names |= {str(c).upper() for c in getattr(alias, "choices", [alias])}
        assert any(f"{n}=" in text for n in names), f"{name} is not in .env.example"
