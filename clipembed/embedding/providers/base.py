"""The provider protocol: the one seam every embedding backend plugs into.

A provider knows its model's limits and tokenizer, sends one request, and returns validated
vectors. Everything around a request (cache, batching, rate limits, retries, concurrency) is
the :class:`~clipembed.embedding.service.EmbeddingService`'s job, so adding Cohere, Voyage or Ollama is
one module implementing :class:`EmbeddingProvider`, plus its registration (with its
capabilities) in :data:`clipembed.embedding.providers.REGISTRY`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from clipembed import errors
from clipembed.embedding.providers.capabilities import Capabilities

Vectors = npt.NDArray[np.float32]  # shape (n, dimensions)


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What the provider said about its limits (``x-ratelimit-*`` and ``retry-after`` headers).

    Any field may be None when the provider did not send it.
    """

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None  # seconds until the request budget is full again
    reset_tokens: float | None = None  # seconds until the token budget is full again
    retry_after: float | None = None  # seconds, from retry-after-ms or retry-after


@dataclasses.dataclass(frozen=True, slots=True)
class EmbeddingResponse:
    """One request's validated answer: one row per input, in input order."""

    vectors: Vectors
    tokens: int  # input tokens the provider billed (usage.prompt_tokens), or our count
    ratelimit: RateLimitInfo | None = None


@runtime_checkable
class EmbeddingProvider(Protocol):
    """One embedding backend. Implementations must be safe to call concurrently."""

    name: str  # its registration's name: for messages and reports, never compared
    capabilities: Capabilities  # as registered: read these instead of the name
    model: str
    dimensions: int
    max_input_tokens: int  # longer inputs are truncated before sending
    max_inputs_per_request: int
    max_tokens_per_request: int

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs with this model's tokenizer."""
        ...

    def truncate(self, text: str) -> str:
        """``text`` cut to at most ``max_input_tokens`` tokens (unchanged when it fits)."""
        ...

    def prepare_batch(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """Truncate many texts and count their tokens in one pass (tokenizers batch well)."""
        ...

    async def embed(self, texts: Sequence[str]) -> EmbeddingResponse:
        """Embed one batch (already within the request limits) in a single request.

        Raises RetryableProviderError (incl. RateLimitedError, InvalidResponseError) or
        PermanentProviderError; never returns vectors that fail :func:`validate_vectors`.
        """
        ...

    async def aclose(self) -> None:
        """Release connections or threads."""
        ...


def validate_vectors(vectors: Vectors, *, count: int, dimensions: int) -> Vectors:
    """Check a response before anything downstream sees it.

    Right number of rows, right length, all finite and not all zero. Raises
    InvalidResponseError naming what was wrong; returns the array as C-contiguous float32.
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[0] != count:
        raise errors.InvalidResponseError(
            f"provider returned {arr.shape[0] if arr.ndim else 0} vectors for {count} inputs"
        )
    if arr.shape[1] != dimensions:
        raise errors.InvalidResponseError(
            f"provider returned vectors of length {arr.shape[1]}, expected {dimensions}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise errors.InvalidResponseError("provider returned a vector with NaN or infinite values")
    if (np.abs(arr).max(axis=1) == 0).any():
        raise errors.InvalidResponseError("provider returned an all-zero vector")
    return arr
