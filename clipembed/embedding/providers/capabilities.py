"""What a provider is and how it is governed, declared as data by the provider's registration.

Everything outside :mod:`clipembed.embedding.providers` that behaves differently per provider
reads one of these fields, and never compares a provider's name:

==================  ==========================================================================
field               read by
==================  ==========================================================================
remote              the health report shows the endpoint (EMBEDDING_API_BASE_URL) to admins
rate_limited        the service paces requests and tokens per minute (one budget, queries first);
                    ``backfill --dry-run`` estimates the time from those limits
parallel_requests   the service's in-flight cap, the query lane's batching, the index policy
batch_api           ``backfill --via auto`` may take the Batch API (half price)
needs_api_key       creating the provider requires OPENAI_API_KEY
model_paths         a model may name a directory (EMBEDDING_LOCAL_MODEL_PATH, ``model add``)
default_model       EMBEDDING_MODEL when unset
default_dimensions  EMBEDDING_DIMENSIONS when unset (None: the model's own size)
known_models        prices (0 for a model not listed) and dimension checks before any call;
                    empty: free, and the dimensions are checked when the model is read
==================  ==========================================================================

Pure data and no heavy import: settings read it before any provider exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from clipembed import models

KnownModel = models.OpenAIModel  # native dimensions, shortenable, price per 1M tokens


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    remote: bool  # a network service; False: a model in this process
    rate_limited: bool  # EMBEDDING_REQUESTS_PER_MINUTE / EMBEDDING_TOKENS_PER_MINUTE apply
    parallel_requests: bool  # False: one encode already uses every core
    batch_api: bool  # takes OpenAI's Batch API (Files + Batches)
    needs_api_key: bool
    model_paths: bool
    default_model: str
    default_dimensions: int | None
    known_models: Mapping[str, KnownModel] = dataclasses.field(default_factory=dict)

    def known(self, model: str) -> KnownModel | None:
        """The catalogue's facts about ``model`` (None: not listed; its answers decide)."""
        return self.known_models.get(model)

    def price_per_million(self, model: str) -> float:
        """US dollars per 1M input tokens, standard API; 0 for a model not listed."""
        known = self.known(model)
        return known.price_per_million if known else 0.0
