"""The OpenAI provider: the official ``openai`` SDK against OpenAI or any compatible endpoint.

One request per call, no SDK retries (``max_retries=0``): the service owns retries, so the
limiter sees every attempt. Vectors are requested as base64 and decoded with numpy, which is
several times faster than JSON floats for 100k clips. Every answer is validated (count, order by
``index``, length, finite) before anyone sees it; SDK errors become clipembed errors whose text
never contains the API key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import openai

from clipembed import errors, models, redaction
from clipembed.embedding import providers
from clipembed.embedding.providers import base, tokens

if TYPE_CHECKING:
    from clipembed.settings import Settings

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 30.0  # idle connections are closed after this; servers drop them at ~60 s
CONNECT_TIMEOUT_SECONDS = 10.0  # a TCP/TLS handshake that takes longer is a dead endpoint

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5s"`` or plain seconds -> seconds; None if unparsable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.replace(" ", ""):
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_ratelimit_headers(headers: Mapping[str, str]) -> base.RateLimitInfo:
    """Read ``x-ratelimit-*`` and ``retry-after(-ms)`` headers (absent or garbled -> None)."""
    h = {k.lower(): v for k, v in headers.items()}
    retry_after = None
    if "retry-after-ms" in h:
        ms = parse_duration(h["retry-after-ms"])
        retry_after = ms / 1000 if ms is not None else None
    if retry_after is None and "retry-after" in h:
        retry_after = parse_duration(h["retry-after"])
    return base.RateLimitInfo(
        limit_requests=_int(h.get("x-ratelimit-limit-requests")),
        limit_tokens=_int(h.get("x-ratelimit-limit-tokens")),
        remaining_requests=_int(h.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_int(h.get("x-ratelimit-remaining-tokens")),
        reset_requests=parse_duration(h.get("x-ratelimit-reset-requests")),
        reset_tokens=parse_duration(h.get("x-ratelimit-reset-tokens")),
        retry_after=retry_after,
    )


def scrub(message: str, secret: str | None) -> str:
    """Remove the key (and anything that looks like an OpenAI key or a URL password)."""
    return redaction.scrub(message, secret)


def _http_client(settings: Settings) -> openai.DefaultAsyncHttpxClient:
    """An HTTP pool as wide as the service's concurrency.

    The service never has more than ``embedding_max_concurrency`` requests in flight, so that
    many kept-alive connections means no request waits for a connection and none is opened
    and closed per request (the SDK's default allows 1,000 and keeps 100 for 5 s). The SDK
    talks through ``httpx`` or, in recent versions, its fork ``httpx2``: the limits are built
    from the class the SDK itself uses, so either works.
    """
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)
    width = settings.embedding_max_concurrency
    timeout = settings.embedding_timeout_seconds
    return openai.DefaultAsyncHttpxClient(
        limits=limits(
            max_connections=width,
            max_keepalive_connections=width,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        timeout=openai.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
    )


class OpenAIProvider:
    """text-embedding-3-* (and any model behind an OpenAI-compatible endpoint)."""

    name = "openai"
    capabilities = providers.capabilities(name)

    def __init__(self, settings: Settings) -> None:
        if settings.openai_api_key is None:
            raise errors.ConfigurationError(
                "OPENAI_API_KEY is required for EMBEDDING_PROVIDER=openai"
            )
        dims = settings.dimensions
        assert dims is not None  # settings give 768 by default for openai
        self.model = settings.model
        self.dimensions = dims
        self.max_input_tokens = models.OPENAI_MAX_TOKENS_PER_INPUT
        self.max_inputs_per_request = settings.embedding_batch_size
        self.max_tokens_per_request = settings.embedding_max_tokens_per_request
        # ada-002 rejects `dimensions`; every other model gets it on every request.
        known = models.OPENAI_MODELS.get(self.model)
        self._send_dimensions = known is None or known.shortenable
        #: a model we do not know, behind an OpenAI-compatible server that may refuse the
        #: `dimensions` parameter: then it is dropped (once) and the answer's length decides
        self._may_drop_dimensions = known is None
        #: public: the Batch API's request lines carry the same body as a synchronous request
        self.send_dimensions = self._send_dimensions
        self._secret = settings.openai_api_key.get_secret_value()
        self._tokenizer = tokens.TiktokenTokenizer()
        self._client = openai.AsyncOpenAI(
            api_key=self._secret,
            base_url=settings.embedding_api_base_url,
            max_retries=0,
            timeout=settings.embedding_timeout_seconds,
            http_client=_http_client(settings),
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, dimensions={self.dimensions})"

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count(text)

    def truncate(self, text: str) -> str:
        return self._tokenizer.truncate(text, self.max_input_tokens)

    def prepare_batch(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        counts = self._tokenizer.count_many(list(texts))
        out = list(texts)
        for i, n in enumerate(counts):
            if n > self.max_input_tokens:
                out[i] = self.truncate(out[i])
                counts[i] = self.count_tokens(out[i])
        return out, counts

    async def embed(self, texts: Sequence[str]) -> base.EmbeddingResponse:
        if not texts:
            return base.EmbeddingResponse(np.zeros((0, self.dimensions), np.float32), 0)
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self._send_dimensions else {}
        try:
            raw = await self._client.embeddings.with_raw_response.create(
                model=self.model, input=list(texts), encoding_format="base64", **extra
            )
        except openai.BadRequestError as exc:
            if extra and self._may_drop_dimensions and "dimension" in _error_message(exc).lower():
                # e.g. a self-hosted server that only gives its model's native size: ask again
                # without the parameter; a vector of another length is still refused
                logger.warning(
                    "the embedding server refused `dimensions`: sending requests without it",
                    extra={"model": self.model, "dimensions": self.dimensions},
                )
                self._send_dimensions = self.send_dimensions = False
                return await self.embed(texts)
            raise self._status_error(exc) from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APITimeoutError:
            raise errors.RetryableProviderError("embedding request timed out") from None
        except openai.APIConnectionError as exc:
            raise errors.RetryableProviderError(
                f"cannot reach the embedding endpoint: {scrub(str(exc.__cause__ or exc), self._secret)}"
            ) from None
        except openai.APIError as exc:  # any other SDK failure: treat as transient, bounded
            raise errors.RetryableProviderError(
                f"embedding request failed ({type(exc).__name__}): {scrub(str(exc), self._secret)}"
            ) from None
        info = parse_ratelimit_headers(raw.headers)
        try:
            parsed = raw.parse()
            data = list(parsed.data)
            usage = getattr(parsed, "usage", None)
        except Exception as exc:  # body is not the documented JSON
            raise errors.InvalidResponseError(
                f"provider returned an unparsable body ({type(exc).__name__})"
            ) from None
        vectors = self._decode(data, len(texts))
        billed = getattr(usage, "prompt_tokens", None) if usage is not None else None
        if not isinstance(billed, int):
            billed = sum(self.count_tokens(t) for t in texts)
        return base.EmbeddingResponse(vectors=vectors, tokens=billed, ratelimit=info)

    def _decode(self, data: list[Any], count: int) -> base.Vectors:
        pairs = [(getattr(item, "index", None), getattr(item, "embedding", None)) for item in data]
        return decode_vectors(pairs, count=count, dimensions=self.dimensions)

    def _status_error(self, exc: openai.APIStatusError) -> errors.ProviderError:
        status = exc.status_code
        detail = scrub(_error_message(exc), self._secret)
        if status == 429 and _error_code(exc) == "insufficient_quota":
            # Out of credit: waiting does not help, and retrying only burns the attempt budget.
            return errors.QuotaExceededError(
                f"provider quota exhausted (429 insufficient_quota): {detail}", status_code=status
            )
        if status == 429:
            info = parse_ratelimit_headers(exc.response.headers)
            return errors.RateLimitedError(
                f"rate limited by the provider (429): {detail}", retry_after=info.retry_after
            )
        if status in (408, 409) or status >= 500:
            return errors.RetryableProviderError(
                f"provider error {status}: {detail}", status_code=status
            )
        return errors.PermanentProviderError(
            f"provider rejected the request ({status}): {detail}", status_code=status
        )

    async def aclose(self) -> None:
        await self._client.close()


def _error_code(exc: openai.APIStatusError) -> str | None:
    body = exc.body
    inner = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(inner, dict):
        code = inner.get("code") or inner.get("type")
        return str(code) if code is not None else None
    return None


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
    text = str(getattr(exc, "message", "") or exc)
    return text[:500]


def decode_vectors(
    pairs: Sequence[tuple[Any, Any]], *, count: int, dimensions: int
) -> base.Vectors:
    """``(index, embedding)`` pairs of an embeddings answer -> validated vectors in input order.

    An embedding is base64 little-endian float32 or a list of floats; indexes must be 0..n-1.
    Shared by the synchronous path (SDK objects) and the Batch API's output lines (JSON).
    """
    if len(pairs) != count:
        raise errors.InvalidResponseError(
            f"provider returned {len(pairs)} vectors for {count} inputs"
        )
    try:
        indexes = [int(index) for index, _ in pairs]
    except (TypeError, ValueError):
        raise errors.InvalidResponseError("provider returned items without an index") from None
    if sorted(indexes) != list(range(count)):
        raise errors.InvalidResponseError("provider returned indexes that are not 0..n-1")
    rows: list[np.ndarray] = [np.empty(0, np.float32)] * count
    for index, (_, emb) in zip(indexes, pairs, strict=True):
        if emb is None:
            raise errors.InvalidResponseError("provider returned an item without an embedding")
        try:
            if isinstance(emb, str):
                row = np.frombuffer(base64.b64decode(emb, validate=True), dtype="<f4")
            else:
                row = np.asarray(emb, dtype=np.float32)
        except (binascii.Error, ValueError, TypeError):
            raise errors.InvalidResponseError("provider returned an undecodable vector") from None
        if row.ndim != 1 or row.shape[0] != dimensions:
            raise errors.InvalidResponseError(
                f"provider returned vectors of length {row.shape[0] if row.ndim else 0}, "
                f"expected {dimensions}"
            )
        rows[index] = row
    return base.validate_vectors(np.stack(rows), count=count, dimensions=dimensions)
