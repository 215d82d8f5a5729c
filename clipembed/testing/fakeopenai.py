"""A real OpenAI-compatible embeddings server for tests and benchmarks, with injectable faults.

It speaks the API the official SDK speaks, over real HTTP: ``POST /v1/embeddings`` with Bearer
auth, ``input`` as a string or list, ``dimensions``, ``encoding_format`` float or base64 (the
SDK's default), ``usage``, the documented limits (2,048 inputs, 8,191 tokens per input, 300,000
per request, no empty strings), and ``x-ratelimit-*`` headers with 429 + ``retry-after-ms`` /
``retry-after`` when its own requests- or tokens-per-minute limit is exceeded.

Vectors are deterministic (:func:`expected_vector`), so a test can check that the vector stored
for a clip is the one for that clip's text. Faults are set at construction, by CLI flags, or at
run time with ``POST /_control`` (so a test can steer a server in another process):

- ``plan``: the next responses, in order: ``"429"``, ``"quota"`` (429 insufficient_quota), ``"500"``, ``"slow"``, ``"wrong_dims"``,
  ``"nan"``, ``"garbage"``, ``"wrong_count"``, ``"shuffled"`` (right vectors, out of order: a
  correct client reorders by ``index``), ``"ok"``;
- random rates: ``fail_rate_500``, ``fail_rate_429``, ``wrong_dims_rate``, ``nan_rate`` (seeded).

It also speaks the **Files** and **Batch** APIs for ``/v1/embeddings`` batches, in memory, as
the SDK's ``client.files`` (create with ``purpose="batch"``, list, retrieve, ``content`` = the raw
bytes, delete) and ``client.batches`` (create, retrieve, cancel, list; cursor pages) use them:

- The input file is JSONL, one ``{"custom_id", "method": "POST", "url": "/v1/embeddings",
  "body"}`` per line. It is checked when the batch leaves ``validating`` (after creation, as in
  the API): parseable lines, ``custom_id`` present and unique, method and url, one model, at most
  50,000 lines / 200 MB / 50,000 embedding inputs. A bad file fails the batch with
  ``errors.data = [{code, message, param, line}]`` (codes: ``invalid_json_line``,
  ``missing_required_parameter``, ``invalid_method``, ``invalid_url``, ``duplicate_custom_id``,
  ``mismatched_model``, ``empty_file``, ``too_many_requests``, ``file_too_large``,
  ``too_many_inputs``). Creation itself refuses (400/404) a missing file, a file whose purpose is
  not ``batch``, a ``completion_window`` other than ``"24h"`` and endpoints other than
  ``/v1/embeddings``.
- Enqueued-token limit (``batch_queue_tokens``, per model, like an organisation's): when the
  tokens of the in-progress batches plus a new one exceed it, the new batch fails with
  ``token_limit_exceeded`` and the API's message.
- Every line runs through the same code as ``POST /v1/embeddings`` (so the same 400s and the
  same :func:`expected_vector` vectors, ``dimensions`` and ``encoding_format`` honoured). A
  success goes to the output file as ``{"id": "batch_req_...", "custom_id", "response":
  {"status_code": 200, "request_id", "body"}, "error": null}``; a failed line goes to the error
  file with its 4xx/5xx ``status_code`` and an ``{"error": {...}}`` body. Lines that never ran
  when the batch expired or was cancelled go to the error file with ``"response": null`` and
  ``"error": {"code": "batch_expired" | "batch_cancelled", "message"}``. ``request_counts``
  counts the lines that ran (``total`` is every line); ``usage`` the tokens of the successes.
- Lifecycle: ``validating -> in_progress -> finalizing -> completed``, or ``failed``, ``expired``
  (when ``batch_completion_window_seconds`` -- default 24 h -- has passed at a look, or on
  ``batch_expire``), ``cancelling -> cancelled`` (the look after ``cancel``). Batches only move
  when looked at (retrieve, list, cancel) or by control actions. ``batch_mode``: ``"instant"``
  (the first look finds it completed), ``"stepwise"`` (one step per look;
  ``batch_lines_per_poll`` lines per look while in progress), ``"manual"`` (validated at the
  first look, then in_progress until an action).
- Control actions (keys of ``/_control`` / :meth:`FakeOpenAI.control`, not options):
  ``batch_process={batch_id: n}`` runs the next n lines, ``batch_complete=batch_id`` runs the
  rest and completes it, ``batch_expire=batch_id`` expires it now. Line faults:
  ``batch_fail_lines`` (custom_ids) and ``batch_fail_rate`` (seeded) fail lines with
  ``batch_fail_status`` (500 by default).

``GET /_stats`` reports what it saw: requests by status, inputs, tokens, the largest request,
every ``dimensions`` value, and how often each text was embedded successfully, synchronously or
in a batch (to prove that no text was embedded twice); for the Files and Batch APIs: calls per
route, files and bytes uploaded, batches created and by status, how often each input file and
``custom_id`` was enqueued, lines run (by status), inputs and tokens of the batches, and the
tokens in the queue. ``POST /_reset`` clears the statistics and the limit windows (files and
batches stay).

Run it in-process (:class:`FakeOpenAI`, a uvicorn server on a thread) or as its own process so
a benchmark can give it the other core::

    python -m clipembed.testing.fakeopenai --port 8199 --latency-ms 50 --rpm 3000 --tpm 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clipembed import models
from clipembed.testing import servers

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


@dataclasses.dataclass
class Options:
    api_key: str | None = None  # when set, any other Bearer token gets 401
    latency_ms: float = 0.0
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


@dataclasses.dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclasses.dataclass
class _Line:
    number: int  # 1-based line of the input file
    custom_id: str
    body: Any


@dataclasses.dataclass
class _Batch:
    id: str
    input_file_id: str
    data: bytes  # the input file as it was at creation (deleting the file changes nothing)
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    window_seconds: float
    status: str = "validating"
    times: dict[str, int] = dataclasses.field(default_factory=dict)  # in_progress_at, ...
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model: str | None = None
    lines: list[_Line] = dataclasses.field(default_factory=list)
    next_line: int = 0  # lines[:next_line] have run
    tokens: int = 0  # what the batch enqueues
    used_tokens: int = 0  # tokens of the lines that succeeded (usage)
    outputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error_lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None

    def obj(self) -> dict[str, Any]:
        t = self.times
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": t.get("in_progress_at"),
            "expires_at": int(self.created_at + self.window_seconds),
            "finalizing_at": t.get("finalizing_at"),
            "completed_at": t.get("completed_at"),
            "failed_at": t.get("failed_at"),
            "expired_at": t.get("expired_at"),
            "cancelling_at": t.get("cancelling_at"),
            "cancelled_at": t.get("cancelled_at"),
            "request_counts": {
                "total": len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": {
                "input_tokens": self.used_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.used_tokens,
            },
            "metadata": self.metadata,
        }


def _batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


class _State:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.random = random.Random(options.seed)
        self.stopping = False
        self._encoding: Any = None
        # Files and batches outlive reset(): they are the server's data, not statistics. Lock
        # order: batch_lock, then files_lock or lock (never the other way round). batch_lock
        # is held while lines run, so the event loop takes it only through asyncio.to_thread.
        self.batch_lock = threading.RLock()
        self.files_lock = threading.Lock()  # held briefly: guards `files` alone
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.reset()

    @property
    def encoding(self) -> Any:
        if self._encoding is None:
            from clipembed.providers import tokens

            self._encoding = tokens.TiktokenTokenizer()
        return self._encoding

    async def sleep_unless_stopping(self, seconds: float) -> None:
        """A long sleep that ends early when the server stops (no cancelled-task noise)."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    def apply(self, changes: dict[str, Any]) -> None:
        """Change options at run time, then run batch actions; a typo changes nothing.

        Options and actions are checked before anything changes (a batch action that cannot
        run, e.g. on an unknown or finished batch, is a ValueError too).
        """
        fields = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(changes) - fields - BATCH_ACTIONS)
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}")
        actions = {k: v for k, v in changes.items() if k in BATCH_ACTIONS}
        changes = {k: v for k, v in changes.items() if k not in BATCH_ACTIONS}
        if "plan" in changes:
            plan = changes["plan"]
            if not isinstance(plan, list) or not all(str(p) in FAULTS for p in plan):
                raise ValueError(f"plan must be a list of {sorted(FAULTS)}")
            changes = dict(changes, plan=[str(p) for p in plan])
        if "batch_mode" in changes and changes["batch_mode"] not in BATCH_MODES:
            raise ValueError(f"batch_mode must be one of {sorted(BATCH_MODES)}")
        if "batch_fail_lines" in changes:
            ids = changes["batch_fail_lines"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("batch_fail_lines must be a list of custom_ids")
        with self.batch_lock:
            steps = self._check_actions(actions)
            with self.lock:
                for key, value in changes.items():
                    setattr(self.options, key, value)
                if "seed" in changes:
                    self.random = random.Random(changes["seed"])
            for action, batch, count in steps:
                self._act(action, batch, count)

    # -- batches --------------------------------------------------------------------------

    def _check_actions(self, actions: dict[str, Any]) -> list[tuple[str, _Batch, int | None]]:
        steps: list[tuple[str, _Batch, int | None]] = []
        for action, value in actions.items():
            if action == "batch_process":
                if not isinstance(value, dict) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0
                    for n in value.values()
                ):
                    raise ValueError("batch_process must map batch ids to a number of lines")
                targets: list[tuple[str, int | None]] = [(str(k), n) for k, n in value.items()]
            elif isinstance(value, str):
                targets = [(value, None)]
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                targets = [(v, None) for v in value]
            else:
                raise ValueError(f"{action} takes a batch id or a list of them")
            for batch_id, count in targets:
                batch = self.batches.get(batch_id)
                if batch is None:
                    raise ValueError(f"{action}: no such batch {batch_id!r}")
                if batch.status in BATCH_TERMINAL or batch.status == "cancelling":
                    raise ValueError(f"{action}: batch {batch_id} is {batch.status}")
                steps.append((action, batch, count))
        return steps

    def _act(self, action: str, batch: _Batch, count: int | None) -> None:
        now = int(time.time())
        if batch.status == "validating":
            self._validate(batch, now)
        if batch.status in BATCH_TERMINAL:
            return  # it failed validation: nothing to run
        if action == "batch_process":
            self._run_lines(batch, count)
        elif action == "batch_complete":
            self._run_lines(batch, None)
            batch.times.setdefault("finalizing_at", now)
            self._finish(batch, "completed", now)
        else:  # batch_expire
            self._finish(batch, "expired", now)

    def advance(self, batch: _Batch) -> None:
        """What time and the batch mode do to a batch between two looks (call with batch_lock)."""
        if batch.status in BATCH_TERMINAL:
            return
        now = int(time.time())
        if batch.status == "cancelling":
            self._finish(batch, "cancelled", now)
            return
        if time.time() >= batch.created_at + batch.window_seconds:
            self._finish(batch, "expired", now)
            return
        mode = self.options.batch_mode
        if batch.status == "validating":
            self._validate(batch, now)
            if mode != "instant" or batch.status != "in_progress":
                return
        if batch.status == "in_progress":
            if mode == "manual":
                return
            if mode == "stepwise":
                self._run_lines(batch, self.options.batch_lines_per_poll)
                if batch.next_line >= len(batch.lines):
                    batch.status = "finalizing"
                    batch.times["finalizing_at"] = now
                return
            self._run_lines(batch, None)
            batch.status = "finalizing"
            batch.times["finalizing_at"] = now
        if batch.status == "finalizing":
            self._finish(batch, "completed", now)

    def _validate(self, batch: _Batch, now: int) -> None:
        """validating -> in_progress, or failed with ``errors`` (the file, or the token queue)."""
        o = self.options
        errors: list[dict[str, Any]] = []
        lines: list[_Line] = []
        models: set[str] = set()
        if len(batch.data) > o.batch_max_file_bytes:
            errors.append(
                _batch_error(
                    "file_too_large",
                    f"The input file is {len(batch.data):,} bytes, more than the maximum of "
                    f"{o.batch_max_file_bytes:,} bytes.",
                )
            )
        else:
            errors, lines, models = self._parse_lines(batch.data)
        inputs: list[str] = []
        for line in lines:
            raw = line.body.get("input")
            texts = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
            inputs.extend(t for t in texts if isinstance(t, str))
        if not errors:
            if not lines:
                errors.append(_batch_error("empty_file", "The input file contains no requests."))
            elif len(lines) > o.batch_max_lines:
                errors.append(
                    _batch_error(
                        "too_many_requests",
                        f"The input file contains {len(lines):,} requests, more than the "
                        f"maximum of {o.batch_max_lines:,}.",
                    )
                )
            elif len(models) > 1:
                errors.append(
                    _batch_error(
                        "mismatched_model",
                        "All the requests of a batch must use the same model; this file uses "
                        f"{', '.join(sorted(models))}.",
                        param="body.model",
                    )
                )
            elif len(inputs) > o.batch_max_inputs:
                errors.append(
                    _batch_error(
                        "too_many_inputs",
                        f"An /v1/embeddings batch may have at most {o.batch_max_inputs:,} "
                        f"embedding inputs across its requests; this one has {len(inputs):,}.",
                    )
                )
        model = next(iter(models)) if len(models) == 1 else None
        tokens = sum(self.encoding.count_many(inputs)) if inputs and not errors else 0
        if not errors and o.batch_queue_tokens is not None:
            queued = sum(
                b.tokens
                for b in self.batches.values()
                if b is not batch
                and b.model == model
                and b.status in ("in_progress", "finalizing", "cancelling")
            )
            if queued + tokens > o.batch_queue_tokens:
                errors.append(
                    _batch_error(
                        "token_limit_exceeded",
                        f"Enqueued token limit reached for {model} in organization "
                        f"{ORGANIZATION}. Limit: {o.batch_queue_tokens:,} enqueued tokens. "
                        "Please try again once some in_progress batches have been completed.",
                    )
                )
        batch.model = model
        if errors:
            batch.errors = errors
            batch.status = "failed"
            batch.times["failed_at"] = now
            with self.lock:
                self.batch_outcomes["failed"] += 1
            return
        batch.lines = lines
        batch.tokens = tokens
        batch.status = "in_progress"
        batch.times["in_progress_at"] = now
        with self.lock:
            self.batches_per_input_file[batch.input_file_id] += 1
            for line in lines:
                self.batch_custom_ids[line.custom_id] += 1
            self.batch_lines_enqueued += len(lines)
            self.batch_tokens_enqueued += tokens

    def _parse_lines(self, data: bytes) -> tuple[list[dict[str, Any]], list[_Line], set[str]]:
        errors: list[dict[str, Any]] = []
        lines: list[_Line] = []
        models: set[str] = set()
        seen: set[str] = set()
        raw_lines = data.split(b"\n")
        if raw_lines and not raw_lines[-1].strip():
            raw_lines.pop()  # the file's final newline
        for number, raw in enumerate(raw_lines, start=1):
            try:
                item = json.loads(raw)
            except ValueError:
                item = None
            if not isinstance(item, dict):
                errors.append(
                    _batch_error(
                        "invalid_json_line", "This line is not parseable as valid JSON.", number
                    )
                )
                continue
            custom_id, body = item.get("custom_id"), item.get("body")
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(
                    _batch_error(
                        "missing_required_parameter",
                        "Missing required parameter: 'custom_id'.",
                        number,
                        "custom_id",
                    )
                )
                continue
            if item.get("method") != "POST":
                errors.append(
                    _batch_error("invalid_method", "The method must be 'POST'.", number, "method")
                )
            if item.get("url") != BATCH_ENDPOINT:
                errors.append(
                    _batch_error(
                        "invalid_url",
                        f"The URL provided for this request ({item.get('url')!r}) does not "
                        f"match the batch endpoint {BATCH_ENDPOINT!r}.",
                        number,
                        "url",
                    )
                )
            if not isinstance(body, dict):
                errors.append(
                    _batch_error(
                        "missing_required_parameter",
                        "Missing required parameter: 'body'.",
                        number,
                        "body",
                    )
                )
                continue
            if custom_id in seen:
                errors.append(
                    _batch_error(
                        "duplicate_custom_id",
                        f"The custom_id {custom_id!r} is a duplicate of another request's. "
                        "The custom_id parameter must be unique for each request in a batch.",
                        number,
                        "custom_id",
                    )
                )
            seen.add(custom_id)
            if isinstance(body.get("model"), str):
                models.add(body["model"])
            lines.append(_Line(number, custom_id, body))
        return errors, lines, models

    def _run_lines(self, batch: _Batch, count: int | None) -> None:
        """Run the next ``count`` lines (all if None) through the synchronous endpoint's code."""
        o = self.options
        end = len(batch.lines) if count is None else min(len(batch.lines), batch.next_line + count)
        for line in batch.lines[batch.next_line : end]:
            checked = check_embedding_body(line.body, self.encoding.count_many)
            if isinstance(checked, tuple):
                status, body = checked
            else:
                with self.lock:
                    injected = line.custom_id in o.batch_fail_lines or (
                        o.batch_fail_rate > 0 and self.random.random() < o.batch_fail_rate
                    )
                if injected:
                    status = o.batch_fail_status
                    body = (
                        _error_body(
                            "The server had an error while processing your request.",
                            "server_error",
                        )
                        if status >= 500
                        else _error_body("Invalid request (injected).", "invalid_request_error")
                    )
                else:
                    status = 200
                    vectors = [expected_vector(t, checked.dims) for t in checked.inputs]
                    body = embedding_payload(
                        checked.model, vectors, checked.as_base64, checked.tokens
                    )
            record = {
                "id": _new_id("batch_req_"),
                "custom_id": line.custom_id,
                "response": {
                    "status_code": status,
                    "request_id": _new_id("req_"),
                    "body": body,
                },
                "error": None,
            }
            with self.lock:
                self.batch_lines_processed += 1
                self.batch_by_status[status] += 1
                if status == 200 and not isinstance(checked, tuple):
                    self.batch_inputs += len(checked.inputs)
                    self.batch_tokens += checked.tokens
                    for t in checked.inputs:
                        self.embedded[text_digest(t)] += 1
            if status == 200 and not isinstance(checked, tuple):
                batch.outputs.append(record)
                batch.completed += 1
                batch.used_tokens += checked.tokens
            else:
                batch.error_lines.append(record)
                batch.failed += 1
        batch.next_line = end

    def _finish(self, batch: _Batch, status: str, now: int) -> None:
        """completed, expired or cancelled: lines that never ran go to the error file."""
        code, message = {
            "expired": (
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            ),
            "cancelled": (
                "batch_cancelled",
                "This request was not executed: the batch was cancelled.",
            ),
        }.get(status, ("", ""))
        for line in batch.lines[batch.next_line :]:
            batch.error_lines.append(
                {
                    "id": _new_id("batch_req_"),
                    "custom_id": line.custom_id,
                    "response": None,
                    "error": {"code": code, "message": message},
                }
            )
        batch.next_line = len(batch.lines)
        batch.status = status
        batch.times[f"{status}_at"] = now
        if batch.outputs:
            batch.output_file_id = self._store_output(batch, "output", batch.outputs, now)
        if batch.error_lines:
            batch.error_file_id = self._store_output(batch, "error", batch.error_lines, now)
        with self.lock:
            self.batch_outcomes[status] += 1

    def _store_output(
        self, batch: _Batch, kind: str, records: list[dict[str, Any]], now: int
    ) -> str:
        data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
        file = _File(_new_id("file-"), f"{batch.id}_{kind}.jsonl", "batch_output", data, now)
        with self.files_lock:
            self.files[file.id] = file
        return file.id

    def enqueued_tokens(self) -> int:
        return sum(
            b.tokens
            for b in self.batches.values()
            if b.status in ("in_progress", "finalizing", "cancelling")
        )

    # -- statistics -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """stats() plus the batches' state, taking the locks in order."""
        with self.batch_lock:
            batches = collections.Counter(b.status for b in self.batches.values())
            queued = self.enqueued_tokens()
            with self.lock:
                out = self.stats()
        out["batches_by_status"] = dict(batches)
        out["batch_tokens_in_queue"] = queued
        return out

    def reset(self) -> None:
        self.limited_by = "requests"  # which limit the last 429 of admit() was for
        self.window: collections.deque[tuple[float, int]] = collections.deque()
        self.requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.inputs = 0
        self.tokens = 0
        self.max_inputs = 0
        self.dimensions_seen: set[int] = set()
        self.without_dimensions = 0  # requests that did not send `dimensions`
        self.embedded: collections.Counter[str] = collections.Counter()
        self.request_times: list[float] = []
        self.api_calls: collections.Counter[str] = collections.Counter()  # files/batches routes
        self.files_uploaded = 0
        self.file_bytes_uploaded = 0
        self.batches_created = 0
        self.batches_per_input_file: collections.Counter[str] = collections.Counter()
        self.batch_custom_ids: collections.Counter[str] = collections.Counter()
        self.batch_lines_enqueued = 0
        self.batch_tokens_enqueued = 0
        self.batch_lines_processed = 0
        self.batch_by_status: collections.Counter[int] = collections.Counter()
        self.batch_inputs = 0
        self.batch_tokens = 0
        self.batch_outcomes: collections.Counter[str] = collections.Counter()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "faults": dict(self.faults),
            "inputs": self.inputs,
            "tokens": self.tokens,
            "max_inputs": self.max_inputs,
            "dimensions_seen": sorted(self.dimensions_seen),
            "requests_without_dimensions": self.without_dimensions,
            "texts_embedded": len(self.embedded),
            "embedded_total": sum(self.embedded.values()),
            "embedded_more_than_once": sum(1 for c in self.embedded.values() if c > 1),
            "embedded_counts": dict(self.embedded),
            "request_times": self.request_times,
            "api_calls": dict(self.api_calls),
            "files_uploaded": self.files_uploaded,
            "file_bytes_uploaded": self.file_bytes_uploaded,
            "batches_created": self.batches_created,
            "batches_per_input_file": dict(self.batches_per_input_file),
            "input_files_batched_more_than_once": sum(
                1 for c in self.batches_per_input_file.values() if c > 1
            ),
            "batch_custom_ids_more_than_once": sum(
                1 for c in self.batch_custom_ids.values() if c > 1
            ),
            "batch_lines_enqueued": self.batch_lines_enqueued,
            "batch_tokens_enqueued": self.batch_tokens_enqueued,
            "batch_lines_processed": self.batch_lines_processed,
            "batch_lines_by_status": {str(k): v for k, v in sorted(self.batch_by_status.items())},
            "batch_inputs": self.batch_inputs,
            "batch_tokens": self.batch_tokens,
            "batch_outcomes": dict(self.batch_outcomes),
        }

    def next_fault(self) -> str:
        o = self.options
        if o.plan:
            return o.plan.pop(0)
        r = self.random.random
        for name, rate in (
            ("500", o.fail_rate_500),
            ("429", o.fail_rate_429),
            ("wrong_dims", o.wrong_dims_rate),
            ("nan", o.nan_rate),
        ):
            if rate and r() < rate:
                return name
        return "ok"

    def admit(self, tokens: int, now: float) -> tuple[bool, dict[str, str]]:
        """Sliding-minute limit check; records the request when admitted."""
        o = self.options
        while self.window and now - self.window[0][0] >= WINDOW:
            self.window.popleft()
        used_requests = len(self.window)
        used_tokens = sum(t for _, t in self.window)
        headers: dict[str, str] = {}
        over = False
        wait = 0.0
        oldest = self.window[0][0] if self.window else now
        if o.rpm is not None:
            over |= used_requests + 1 > o.rpm
            headers["x-ratelimit-limit-requests"] = str(o.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, o.rpm - used_requests - 1))
            headers["x-ratelimit-reset-requests"] = f"{max(0.0, WINDOW - (now - oldest)):.3f}s"
            if used_requests + 1 > o.rpm:
                wait = max(wait, WINDOW - (now - oldest))
        if o.tpm is not None:
            over |= used_tokens + tokens > o.tpm
            headers["x-ratelimit-limit-tokens"] = str(o.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, o.tpm - used_tokens - tokens))
            headers["x-ratelimit-reset-tokens"] = f"{max(0.0, WINDOW - (now - oldest)):.3f}s"
            if used_tokens + tokens > o.tpm:
                # time until enough tokens have left the window
                freed, t_wait = 0, 0.0
                for ts, t in self.window:
                    freed += t
                    t_wait = WINDOW - (now - ts)
                    if used_tokens - freed + tokens <= o.tpm:
                        break
                wait = max(wait, t_wait)
        if over:
            self.limited_by = (
                "tokens" if o.tpm is not None and used_tokens + tokens > o.tpm else "requests"
            )
            wait = max(wait, 0.001)
            headers["retry-after-ms"] = str(int(wait * 1000) + 1)
            headers["retry-after"] = str(int(wait) + 1)
            return False, headers
        self.window.append((now, tokens))
        return True, headers


def create_app(options: Options | None = None) -> Starlette:
    state = _State(options or Options())

    async def embeddings(request: Request) -> Response:
        with state.lock:
            state.requests += 1
            state.request_times.append(time.time())
        response = await handle(request)
        if response.status_code in (400, 401):
            with state.lock:
                state.by_status[response.status_code] += 1
        return response

    def auth_error(request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return _error(401, "You didn't provide an API key.", "invalid_request_error")
        key = state.options.api_key
        if key is not None and auth[7:] != key:
            return _error(401, "Incorrect API key provided.", "invalid_request_error")
        return None

    async def handle(request: Request) -> Response:
        o = state.options
        if (refused := auth_error(request)) is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        checked = await asyncio.to_thread(check_embedding_body, body, state.encoding.count_many)
        if isinstance(checked, tuple):
            status, error_body = checked
            return JSONResponse(error_body, status_code=status)
        model, inputs, dims, sent_dims = (
            checked.model,
            checked.inputs,
            checked.dims,
            checked.sent_dims,
        )
        tokens = checked.tokens

        with state.lock:
            if sent_dims is None:
                state.without_dimensions += 1
            else:
                state.dimensions_seen.add(dims)
            state.max_inputs = max(state.max_inputs, len(inputs))
            admitted, headers = state.admit(tokens, time.monotonic())
            limited_by = state.limited_by
            fault = state.next_fault() if admitted else "limit"
            if fault != "ok":
                state.faults[fault] += 1
        if not admitted:
            with state.lock:
                state.by_status[429] += 1
            kind = limited_by
            unit = "TPM" if kind == "tokens" else "RPM"
            return _error(
                429,
                f"Rate limit reached for {model} on {kind} per min ({unit}). "
                f"Please try again in {headers['retry-after-ms']}ms.",
                kind,
                headers,
            )
        if o.latency_ms:
            await asyncio.sleep(o.latency_ms / 1000)
        if fault == "429":
            with state.lock:
                state.by_status[429] += 1
            hdr = dict(
                headers,
                **{
                    "retry-after-ms": str(o.retry_after_ms),
                    "retry-after": str(max(1, o.retry_after_ms // 1000)),
                },
            )
            return _error(429, "Rate limit reached (injected)", "requests", hdr)
        if fault == "quota":  # the account is out of credit: the real API's body and code
            with state.lock:
                state.by_status[429] += 1
            body_quota = {
                "error": {
                    "message": "You exceeded your current quota, please check your plan and "
                    "billing details.",
                    "type": "insufficient_quota",
                    "param": None,
                    "code": "insufficient_quota",
                }
            }
            return JSONResponse(body_quota, status_code=429, headers=headers)
        if fault == "500":
            with state.lock:
                state.by_status[500] += 1
            return _error(
                500,
                "The server had an error while processing your request.",
                "server_error",
                headers,
            )
        if fault == "slow":
            try:
                await state.sleep_unless_stopping(o.slow_seconds)
            except asyncio.CancelledError:  # stop() cut it off: end quietly, not with a traceback
                return _error(503, "The server is shutting down.", "server_error")
        if fault == "garbage":
            with state.lock:
                state.by_status[200] += 1
            return Response(
                b"<html>502 Bad Gateway</html>{",
                status_code=200,
                media_type="application/json",
                headers=headers,
            )

        out_dims = dims + 1 if fault == "wrong_dims" else dims
        vectors = [expected_vector(t, out_dims) for t in inputs]
        if fault == "nan":
            vectors[0] = vectors[0].copy()
            vectors[0][0] = np.nan
        payload = embedding_payload(model, vectors, checked.as_base64, tokens)
        data = payload["data"]
        if fault == "wrong_count":
            data = data[:-1] if len(data) > 1 else data + data
        if fault == "shuffled":
            data.reverse()
        correct = fault in ("ok", "shuffled", "slow")
        with state.lock:
            state.by_status[200] += 1
            state.inputs += len(inputs)
            state.tokens += tokens
            if correct:
                for t in inputs:
                    state.embedded[text_digest(t)] += 1
        payload["data"] = data
        return Response(
            json.dumps(payload).encode(), media_type="application/json", headers=headers
        )

    # -- Files and Batch APIs ---------------------------------------------------------------

    def called(name: str) -> None:
        with state.lock:
            state.api_calls[name] += 1

    def not_found(kind: str, ident: str, param: str = "id") -> Response:
        return _error(404, f"No such {kind}: {ident}", "invalid_request_error", param=param)

    def invalid(message: str, param: str | None = None) -> Response:
        return _error(400, message, "invalid_request_error", param=param)

    async def locked(fn: Callable[[], Response]) -> Response:
        """Run ``fn`` holding batch_lock, off the event loop (a batch may take a while)."""

        def run() -> Response:
            with state.batch_lock:
                return fn()

        return await asyncio.to_thread(run)

    def page(
        items: list[dict[str, Any]], request: Request, default_limit: int, most: int
    ) -> Response:
        """A cursor page as the SDK's ``CursorPage`` reads it (``after``, ``limit``)."""
        try:
            limit = int(request.query_params.get("limit", default_limit))
        except ValueError:
            limit = -1
        if not 1 <= limit <= most:
            return invalid(f"'limit' must be between 1 and {most}.", "limit")
        after = request.query_params.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        data = items[:limit]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(items) > limit,
            }
        )

    async def files_create(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("files.create")
        try:
            form = await request.form()
        except Exception:  # not multipart, or a broken one
            return invalid("The request must be multipart/form-data with 'file' and 'purpose'.")
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            return invalid("Missing required parameter: 'file'.", "file")
        if not isinstance(purpose, str) or purpose not in FILE_PURPOSES:
            return invalid(
                f"Invalid value for 'purpose': {purpose!r}. Supported values are: "
                f"{', '.join(sorted(FILE_PURPOSES))}.",
                "purpose",
            )
        data = await upload.read()
        file = _File(_new_id("file-"), upload.filename or "upload", purpose, data, int(time.time()))
        with state.files_lock:
            state.files[file.id] = file
        with state.lock:
            state.files_uploaded += 1
            state.file_bytes_uploaded += len(data)
        return JSONResponse(file.obj())

    async def files_list(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("files.list")
        purpose = request.query_params.get("purpose")
        ascending = request.query_params.get("order", "desc") == "asc"
        with state.files_lock:
            files = [f.obj() for f in state.files.values() if purpose in (None, f.purpose)]
        return page(files if ascending else files[::-1], request, 10_000, 10_000)

    async def files_retrieve(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("files.retrieve")
        file_id = request.path_params["file_id"]
        with state.files_lock:
            file = state.files.get(file_id)
        return JSONResponse(file.obj()) if file else not_found("File", file_id)

    async def files_content(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("files.content")
        file_id = request.path_params["file_id"]
        with state.files_lock:
            file = state.files.get(file_id)
        if file is None:
            return not_found("File", file_id)
        return Response(file.data, media_type="application/octet-stream")

    async def files_delete(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("files.delete")
        file_id = request.path_params["file_id"]
        with state.files_lock:
            file = state.files.pop(file_id, None)
        if file is None:
            return not_found("File", file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    async def batches_create(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("batches.create")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return invalid("We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return invalid("The body of the request must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return invalid(f"Missing required parameter: '{name}'.", name)
        if body["completion_window"] != "24h":
            return invalid(
                f"Invalid value for 'completion_window': {body['completion_window']!r}. "
                "Supported values are: '24h'.",
                "completion_window",
            )
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            return invalid(f"Invalid value for 'endpoint': {endpoint!r}.", "endpoint")
        if endpoint != BATCH_ENDPOINT:
            return invalid(
                f"This fake server runs only {BATCH_ENDPOINT} batches, not {endpoint}.",
                "endpoint",
            )
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            return invalid(
                "'metadata' must have at most 16 string keys (64 characters) and string "
                "values (512 characters).",
                "metadata",
            )
        file_id = body["input_file_id"]
        window = state.options.batch_completion_window_seconds or BATCH_COMPLETION_WINDOW_SECONDS

        def create() -> Response:
            with state.files_lock:
                file = state.files.get(file_id)
            if file is None:
                return not_found("File", file_id, "input_file_id")
            if file.purpose != "batch":
                return invalid(
                    f"The file {file_id} has purpose {file.purpose!r}; a batch's input file "
                    "must be uploaded with purpose 'batch'.",
                    "input_file_id",
                )
            batch = _Batch(
                id=_new_id("batch_"),
                input_file_id=file_id,
                data=file.data,
                completion_window="24h",
                metadata=metadata,
                created_at=int(time.time()),
                window_seconds=window,
            )
            state.batches[batch.id] = batch
            with state.lock:
                state.batches_created += 1
            return JSONResponse(batch.obj())

        return await locked(create)

    async def batches_retrieve(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("batches.retrieve")
        batch_id = request.path_params["batch_id"]

        def retrieve() -> Response:
            batch = state.batches.get(batch_id)
            if batch is None:
                return not_found("batch", batch_id)
            state.advance(batch)
            return JSONResponse(batch.obj())

        return await locked(retrieve)

    async def batches_cancel(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("batches.cancel")
        batch_id = request.path_params["batch_id"]

        def cancel() -> Response:
            batch = state.batches.get(batch_id)
            if batch is None:
                return not_found("batch", batch_id)
            state.advance(batch)  # it may have finished (or expired) in the meantime
            if batch.status in BATCH_TERMINAL:
                return _error(
                    409,
                    f"Cannot cancel a batch with status '{batch.status}'.",
                    "invalid_request_error",
                )
            if batch.status != "cancelling":
                batch.status = "cancelling"
                batch.times["cancelling_at"] = int(time.time())
            return JSONResponse(batch.obj())

        return await locked(cancel)

    async def batches_list(request: Request) -> Response:
        if (refused := auth_error(request)) is not None:
            return refused
        called("batches.list")

        def listing() -> Response:
            for batch in state.batches.values():
                state.advance(batch)
            newest_first = [b.obj() for b in reversed(state.batches.values())]
            return page(newest_first, request, 20, 100)

        return await locked(listing)

    async def control(request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            await asyncio.to_thread(state.apply, changes)  # batch actions may take a while
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error")
        with state.lock:
            return JSONResponse(dataclasses.asdict(state.options) | {"api_key": None})

    async def stats(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(state.snapshot))

    async def reset(request: Request) -> Response:
        with state.lock:
            state.reset()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/files", files_create, methods=["POST"]),
            Route("/v1/files", files_list, methods=["GET"]),
            Route("/v1/files/{file_id}", files_retrieve, methods=["GET"]),
            Route("/v1/files/{file_id}", files_delete, methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", files_content, methods=["GET"]),
            Route("/v1/batches", batches_create, methods=["POST"]),
            Route("/v1/batches", batches_list, methods=["GET"]),
            Route("/v1/batches/{batch_id}", batches_retrieve, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", batches_cancel, methods=["POST"]),
            Route("/_control", control, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )
    app.state.fake = state
    return app


class FakeOpenAI:
    """The server on a background thread: ``with FakeOpenAI(latency_ms=5) as fake: fake.base_url``."""

    def __init__(self, port: int | None = None, **options: Any) -> None:
        self.port = port or servers.free_port()
        self.app = create_app(Options(**options))
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> _State:
        return self.app.state.fake  # type: ignore[no-any-return]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self.state.stopping = False
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.state.stopping = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def control(self, **changes: Any) -> None:
        """Change options now and run batch actions (same as ``POST /_control``).

        A bad option, or an action on an unknown or finished batch, is a ValueError and changes
        nothing: ``fake.control(batch_mode="manual")``, ``fake.control(batch_complete=batch_id)``.
        """
        self.state.apply(changes)

    def reset(self) -> None:
        """Clear statistics and limit windows (same as ``POST /_reset``); options stay."""
        with self.state.lock:
            self.state.reset()

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; the first stdout line is the base URL, once it accepts."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--api-key", help="accept only this Bearer token (default: any)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument("--rpm", type=int, help="requests per sliding minute (default: none)")
    parser.add_argument("--tpm", type=int, help="tokens per sliding minute (default: none)")
    parser.add_argument(
        "--plan", default="", help=f"comma-separated next responses, of {sorted(FAULTS)}"
    )
    parser.add_argument("--fail-rate-500", type=float, default=0.0)
    parser.add_argument("--fail-rate-429", type=float, default=0.0)
    parser.add_argument("--wrong-dims-rate", type=float, default=0.0)
    parser.add_argument("--nan-rate", type=float, default=0.0)
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="duration of a 'slow'")
    parser.add_argument(
        "--retry-after-ms", type=int, default=200, help="retry-after of an injected 429"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random fault rates")
    parser.add_argument(
        "--batch-mode", choices=sorted(BATCH_MODES), default="instant", help="how batches move"
    )
    parser.add_argument("--batch-queue-tokens", type=int, help="enqueued-token limit per model")
    args = parser.parse_args(argv)
    plan = [p.strip() for p in args.plan.split(",") if p.strip()]
    unknown = [p for p in plan if p not in FAULTS]
    if unknown:
        parser.error(f"--plan: unknown fault(s) {unknown}; known: {sorted(FAULTS)}")
    port = args.port or servers.free_port()
    app = create_app(
        Options(
            api_key=args.api_key,
            latency_ms=args.latency_ms,
            slow_seconds=args.slow_seconds,
            rpm=args.rpm,
            tpm=args.tpm,
            plan=plan,
            fail_rate_500=args.fail_rate_500,
            fail_rate_429=args.fail_rate_429,
            wrong_dims_rate=args.wrong_dims_rate,
            nan_rate=args.nan_rate,
            retry_after_ms=args.retry_after_ms,
            seed=args.seed,
            batch_mode=args.batch_mode,
            batch_queue_tokens=args.batch_queue_tokens,
        )
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
