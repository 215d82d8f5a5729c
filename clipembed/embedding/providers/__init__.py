"""Embedding providers: one protocol (:mod:`.base`), one registry (below), one module each.

Each provider is registered once, in :data:`REGISTRY`, with its
:class:`~.capabilities.Capabilities` (remote or local, rate-limited, parallel requests, Batch
API, API key, model paths, defaults, the known models' prices and dimensions) and where its
class lives. The rest of clipembed reads those capabilities — from the registry by the
configured name (settings, spaces) or from ``provider.capabilities`` — and never compares a
provider's name.

Adding a backend (Cohere, Voyage, Ollama...) is:

1. one module here with a class implementing :class:`.base.EmbeddingProvider`: constructed from
   the Settings, ``name`` and ``capabilities = providers.capabilities("<name>")`` as class
   attributes;
2. one registration in :data:`REGISTRY`: its name, ``"module:Class"`` and its capabilities.

Nothing else changes: EMBEDDING_PROVIDER and ``clipembed model add --provider`` accept the new
name, and the service, limits, estimates and reports follow its capabilities.

This module and :mod:`.capabilities` import nothing heavy: settings read the registry before
any provider exists, and a provider's module (its SDK, its model runtime) is imported only when
one is created.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from clipembed import errors, models
from clipembed.embedding.providers.capabilities import Capabilities

if TYPE_CHECKING:
    from clipembed.embedding.providers import base
    from clipembed.settings import Settings

__all__ = ["REGISTRY", "Capabilities", "Registration", "capabilities", "create", "names"]


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    name: str  # EMBEDDING_PROVIDER's value
    cls: str  # "module:Class" under this package, imported on first use
    capabilities: Capabilities

    def load(self) -> Callable[[Settings], base.EmbeddingProvider]:
        """The provider's class (its module imported now, not before)."""
        module, _, cls = self.cls.partition(":")
        loaded: Callable[[Settings], base.EmbeddingProvider] = getattr(
            importlib.import_module(f"{__name__}.{module}"), cls
        )
        return loaded


REGISTRY: dict[str, Registration] = {
    r.name: r
    for r in (
        Registration(
            "openai",
            "openai:OpenAIProvider",
            Capabilities(
                remote=True,
                rate_limited=True,
                parallel_requests=True,
                batch_api=True,
                needs_api_key=True,
                model_paths=False,
                default_model=models.OPENAI_DEFAULT_MODEL,
                default_dimensions=models.OPENAI_DEFAULT_DIMENSIONS,
                known_models=models.OPENAI_MODELS,
            ),
        ),
        Registration(
            "local",
            "local:LocalProvider",
            Capabilities(
                remote=False,
                rate_limited=False,
                parallel_requests=False,
                batch_api=False,
                needs_api_key=False,
                model_paths=True,
                default_model=models.LOCAL_DEFAULT_MODEL,
                default_dimensions=None,
            ),
        ),
    )
}


def names() -> tuple[str, ...]:
    """Every registered provider's name, in registration order."""
    return tuple(REGISTRY)


def registration(name: str) -> Registration:
    """The provider registered as ``name``. Raises ConfigurationError naming the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise errors.ConfigurationError(
            f"unknown embedding provider {name!r}: use {' or '.join(names())}"
        ) from None


def capabilities(name: str) -> Capabilities:
    """What the provider registered as ``name`` declares (ConfigurationError when unknown)."""
    return registration(name).capabilities


def create(settings: Settings) -> base.EmbeddingProvider:
    """The provider the settings ask for. Raises ConfigurationError when it cannot work."""
    entry = registration(settings.embedding_provider)
    if entry.capabilities.needs_api_key:
        settings.require_provider_credentials()
    return entry.load()(settings)
