"""Embedding providers behind one protocol (:mod:`clipembed.embedding.providers.base`).

Adding a backend (Cohere, Voyage, Ollama...) is one module implementing
``base.EmbeddingProvider`` and one branch in :func:`create`.
"""

from __future__ import annotations

from clipembed import errors
from clipembed.embedding.providers import base
from clipembed.settings import Settings


def create(settings: Settings) -> base.EmbeddingProvider:
    """The provider the settings ask for. Raises ConfigurationError when it cannot work."""
    if settings.embedding_provider == "openai":
        settings.require_provider_credentials()
        from clipembed.embedding.providers import openai

        return openai.OpenAIProvider(settings)
    if settings.embedding_provider == "local":
        from clipembed.embedding.providers import local

        return local.LocalProvider(settings)
    raise errors.ConfigurationError(f"unknown EMBEDDING_PROVIDER {settings.embedding_provider!r}")
