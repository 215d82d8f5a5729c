"""The fake's protocol: the API's limits, the expected vectors, options, error bodies, and the
validation and payload of a /v1/embeddings request (shared by the sync endpoint and batches)."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response

from clipembed import models

NATIVE_DIMENSIONS = {m.name: m.native_dimensions for m in models.OPENAI_MODELS.values()}
#: reject `dimensions` for these, like the API
FIXED_DIMENSIONS = frozenset(m.name for m in models.OPENAI_MODELS.values() if not m.shortenable)
MAX_INPUTS = models.OPENAI_MAX_INPUTS_PER_REQUEST
MAX_TOKENS_PER_INPUT = models.OPENAI_MAX_TOKENS_PER_INPUT
MAX_TOKENS_PER_REQUEST = models.OPENAI_MAX_TOKENS_PER_REQUEST
WINDOW = 60.0  # seconds: the limits are per minute
#: A "slow" answer still in flight at stop() is cut off after this, so teardown stays quick.
GRACEFUL_SHUTDOWN_SECONDS = 1  # uvicorn takes whole seconds
#: What a ``plan`` entry may say (anything else is a 400 from /_control, to catch typos).
FAULTS = frozenset(
    {"ok", "429", "500", "slow", "wrong_dims", "nan", "garbage", "wrong_count", "shuffled", "quota"}
)


#: The Batch API. Only /v1/embeddings batches run here; the others are refused at creation.
BATCH_ENDPOINT = "/v1/embeddings"
BATCH_ENDPOINTS = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }
)
BATCH_COMPLETION_WINDOW_SECONDS = 24 * 3600  # "24h", the only window the API takes
BATCH_MAX_LINES = 50_000  # requests per input file
BATCH_MAX_FILE_BYTES = 200 * 1024 * 1024  # 200 MB per input file
BATCH_MAX_EMBEDDING_INPUTS = 50_000  # embedding inputs across all the requests of a batch
#: instant: the first look after creation finds it completed; stepwise: each look moves it
#: one step (validating, in_progress, finalizing, completed); manual: validated at the first
#: look, then it stays in_progress until a control action (batch_process/complete/expire).
BATCH_MODES = frozenset({"instant", "stepwise", "manual"})
#: Control keys that act on a batch instead of setting an option.
BATCH_ACTIONS = frozenset({"batch_process", "batch_complete", "batch_expire"})
BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
FILE_PURPOSES = frozenset(
    {"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}
)  # what a client may upload (batch_output etc. are the server's)
ORGANIZATION = "org-fakeopenai"


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected_vector(text: str, dimensions: int) -> np.ndarray:
    """The unit-norm float32 vector this server returns for ``text`` at ``dimensions``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vec = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    vec /= np.linalg.norm(vec)
    return vec


VECTOR_MODES = ("hash", "words")
_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=200_000)
def _word_vector(word: str, dimensions: int) -> np.ndarray:
    return expected_vector("word:" + word, dimensions)


def words_vector(text: str, dimensions: int) -> np.ndarray:
    """A vector with the structure of a text embedding, for benchmarks of recall at scale: the
    normalised sum of the text's words' vectors (lower-cased; a run of CJK characters counts
    as its bigrams) plus a little of the text's own, so texts sharing words are near each other
    (an index over uniform noise, :func:`expected_vector`, is the hardest case there is)."""
    words: list[str] = []
    for token in _WORD.findall(text.lower()):
        if len(token) > 2 and not token.isascii():
            words += [token[i : i + 2] for i in range(len(token) - 1)]
        else:
            words.append(token)
    vec = 0.3 * expected_vector(text, dimensions)
    for word in words:
        vec = vec + _word_vector(word, dimensions)
    norm = np.linalg.norm(vec)
    return (vec / norm).astype(np.float32) if norm else expected_vector(text, dimensions)


def vector_for(text: str, dimensions: int, mode: str = "hash") -> np.ndarray:
    """The vector the server returns in ``mode`` (Options.vectors): hash (tests) or words."""
    return words_vector(text, dimensions) if mode == "words" else expected_vector(text, dimensions)


@dataclasses.dataclass
class Options:
    api_key: str | None = None  # when set, any other Bearer token gets 401
    latency_ms: float = 0.0
    vectors: str = "hash"  # how vectors are made: one of VECTOR_MODES (vector_for)
    slow_seconds: float = 5.0  # how long a "slow" response takes
    rpm: int | None = None
    tpm: int | None = None
    plan: list[str] = dataclasses.field(default_factory=list)
    fail_rate_500: float = 0.0
    fail_rate_429: float = 0.0
    wrong_dims_rate: float = 0.0
    nan_rate: float = 0.0
    retry_after_ms: int = 200  # what a fault-injected 429 asks the client to wait
    seed: int = 0
    # Batch API (see the module docstring)
    batch_mode: str = "instant"  # one of BATCH_MODES
    batch_lines_per_poll: int | None = None  # "stepwise": lines run per retrieve (None: all)
    batch_completion_window_seconds: float | None = None  # None: the real 24 h
    batch_queue_tokens: int | None = None  # the organisation's enqueued-token limit per model
    batch_fail_lines: list[str] = dataclasses.field(default_factory=list)  # custom_ids that fail
    batch_fail_rate: float = 0.0  # seeded, like the other rates
    batch_fail_status: int = 500  # the status of a line failed by the two above
    batch_max_lines: int = BATCH_MAX_LINES
    batch_max_file_bytes: int = BATCH_MAX_FILE_BYTES
    batch_max_inputs: int = BATCH_MAX_EMBEDDING_INPUTS
    #: models served like a self-hosted server does: always their native size, and a request
    #: carrying `dimensions` is a 400 (name -> dimensions)
    native_only_models: dict[str, int] = dataclasses.field(default_factory=dict)


def _error_body(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(
    status: int,
    message: str,
    kind: str,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> Response:
    return JSONResponse(
        _error_body(message, kind, param, code), status_code=status, headers=headers
    )


@dataclasses.dataclass
class EmbeddingRequest:
    """A valid ``/v1/embeddings`` body, as :func:`check_embedding_body` read it."""

    model: str
    inputs: list[str]
    dims: int  # what the answer has: ``dimensions`` if sent, else the model's native size
    sent_dims: int | None
    tokens: int
    as_base64: bool


def native_only_body(body: Any, models: dict[str, int]) -> Any | tuple[int, dict[str, Any]]:
    """A self-hosted server's model (``Options.native_only_models``): a request carrying
    `dimensions` is a 400, and the answer has the model's native size."""
    if not isinstance(body, dict) or body.get("model") not in models:
        return body
    if body.get("dimensions") is not None:
        return 400, _error_body(
            "Unrecognized request argument supplied: dimensions", "invalid_request_error"
        )
    return {**body, "dimensions": models[body["model"]]}


def check_embedding_body(
    body: Any, count_many: Callable[[list[str]], list[int]]
) -> EmbeddingRequest | tuple[int, dict[str, Any]]:
    """Validate an embeddings request body like the API: the request, or (status, error body).

    The synchronous endpoint and every line of a batch go through this, so both refuse the same
    bodies with the same errors.
    """

    def bad(message: str, kind: str = "invalid_request_error") -> tuple[int, dict[str, Any]]:
        return 400, _error_body(message, kind)

    if not isinstance(body, dict):
        return bad("The body of the request must be a JSON object.")
    model = body.get("model")
    raw = body.get("input")
    if not isinstance(model, str) or raw is None:
        return bad("'model' and 'input' are required")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        return bad("'input' must be a string or a non-empty array of strings")
    if len(inputs) > MAX_INPUTS:
        return bad(f"'input' must have at most {MAX_INPUTS} items")
    if any(t == "" for t in inputs):
        return bad("'input' cannot contain an empty string")
    native = NATIVE_DIMENSIONS.get(model)
    sent_dims = body.get("dimensions")
    dims = sent_dims
    if dims is None:
        dims = native or 1536
    if model in FIXED_DIMENSIONS and sent_dims is not None:
        return bad("This model does not support specifying dimensions.")
    wrong = not isinstance(dims, int) or isinstance(dims, bool) or dims < 1
    if wrong or (native is not None and dims > native):
        return bad(f"This model does not support dimensions={dims}.")
    counts = count_many(inputs)
    if max(counts) > MAX_TOKENS_PER_INPUT:
        return bad(f"This model's maximum context length is {MAX_TOKENS_PER_INPUT} tokens.")
    tokens = sum(counts)
    if tokens > MAX_TOKENS_PER_REQUEST:
        return bad(
            f"Requested {tokens} tokens, max {MAX_TOKENS_PER_REQUEST} tokens per request",
            "max_tokens_per_request",
        )
    return EmbeddingRequest(
        model=model,
        inputs=inputs,
        dims=dims,
        sent_dims=sent_dims,
        tokens=tokens,
        as_base64=body.get("encoding_format") == "base64",
    )


def embedding_payload(
    model: str, vectors: list[np.ndarray], as_base64: bool, tokens: int
) -> dict[str, Any]:
    """The body of a successful ``/v1/embeddings`` answer (synchronous or a batch line)."""
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
            if as_base64
            else v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
