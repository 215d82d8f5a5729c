"""The provider registry: each provider's capabilities declared once, and read, not its name.

Adding a provider is one module plus one registration; these tests hold the rest of clipembed
to that: every registration loads a class that carries the same name and capabilities, the
settings and the spaces accept exactly the registered names, and no module outside
``clipembed/embedding/providers/`` compares a string with a provider's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clipembed import errors, models, settings
from clipembed.embedding import providers
from clipembed.spaces import registry as spaces_registry

PACKAGE = Path(__file__).resolve().parents[2] / "clipembed"
PROVIDERS_PACKAGE = PACKAGE / "embedding" / "providers"


@pytest.mark.parametrize("name", providers.names())
def test_each_registration_loads_its_class_with_the_same_name_and_capabilities(name):
    entry = providers.registration(name)
    cls = entry.load()
    assert getattr(cls, "name", None) == name
    assert getattr(cls, "capabilities", None) is entry.capabilities


def test_an_unknown_provider_is_a_configuration_error_naming_the_known_ones():
    with pytest.raises(errors.ConfigurationError, match="openai or local"):
        providers.capabilities("cohere")
    with pytest.raises(errors.ConfigurationError, match="EMBEDDING_PROVIDER: unknown provider"):
        settings.load(_env_file=None, embedding_provider="cohere")
    with pytest.raises(spaces_registry.SpaceError, match="unknown provider 'cohere'"):
        spaces_registry.check_new(
            "x", provider="cohere", model="m", dimensions=8, storage="halfvec"
        )


@pytest.mark.parametrize("name", providers.names())
def test_settings_take_defaults_and_prices_from_the_capabilities(name):
    caps = providers.capabilities(name)
    cfg = settings.load(_env_file=None, embedding_provider=name, redis_url="none")
    assert cfg.capabilities is caps
    assert cfg.model == caps.default_model
    assert cfg.dimensions == caps.default_dimensions
    assert cfg.price_per_million_tokens == caps.price_per_million(caps.default_model)


def test_the_declared_capabilities_are_what_the_code_used_to_decide_by_name():
    openai, local = providers.capabilities("openai"), providers.capabilities("local")
    assert (openai.remote, openai.rate_limited, openai.parallel_requests) == (True, True, True)
    assert (openai.batch_api, openai.needs_api_key, openai.model_paths) == (True, True, False)
    assert (local.remote, local.rate_limited, local.parallel_requests) == (False, False, False)
    assert (local.batch_api, local.needs_api_key, local.model_paths) == (False, False, True)
    assert openai.price_per_million("text-embedding-3-small") == 0.02
    assert openai.price_per_million("not-a-known-model") == 0.0
    assert local.price_per_million(models.LOCAL_DEFAULT_MODEL) == 0.0
    assert openai.known("text-embedding-ada-002") is models.OPENAI_MODELS["text-embedding-ada-002"]
    assert local.known(models.LOCAL_DEFAULT_MODEL) is None  # checked when the model is read


def name_comparisons(path: Path) -> list[str]:
    """``x == "openai"``, ``"local" != y``, ``x in ("openai", ...)``: a registered name as a
    string constant in a comparison (a default value or an environment setting is no comparison)."""
    names = set(providers.names())
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            constants = (
                operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            )
            for c in constants:
                if isinstance(c, ast.Constant) and c.value in names:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def test_no_module_outside_the_providers_package_compares_a_provider_name():
    modules = [p for p in PACKAGE.rglob("*.py") if PROVIDERS_PACKAGE not in p.parents]
    assert modules
    assert [hit for p in sorted(modules) for hit in name_comparisons(p)] == []
