"""Batch API files, pure: request lines in, vectors and failures out. No I/O.

An input file holds one ``/v1/embeddings`` request per line, each with several inputs (packed
token-exactly like the synchronous path) and ``dimensions`` on every request; its ``custom_id``
is ``b<batch>-r<n>``. Output lines come back in any order; each is matched to its request by
``custom_id`` and its vectors to the request's inputs by ``index``, then validated exactly as a
synchronous answer is (count, length, finite, not all zero). A line that cannot be trusted
fails its inputs; nothing from it is stored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from clipembed import errors
from clipembed.embedding.providers.openai import decode_vectors

MAX_LINES = 50_000  # requests per batch (the Batch API's limit)
MAX_INPUTS = 50_000  # embedding inputs per batch
MAX_FILE_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/embeddings"
#: Error codes of lines the provider never ran: their clips go into a later batch.
NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    custom_id: str
    texts: tuple[str, ...]


def custom_id(batch_id: int, request: int) -> str:
    return f"b{batch_id}-r{request}"


def request_line(request: Request, body: dict[str, Any]) -> bytes:
    """One JSONL line: the request's ``body`` (model, dimensions, encoding) with its inputs."""
    line = {
        "custom_id": request.custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {**body, "input": list(request.texts)},
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def input_file(requests: Sequence[Request], body: dict[str, Any]) -> bytes:
    data = b"".join(request_line(r, body) for r in requests)
    if len(requests) > MAX_LINES or len(data) > MAX_FILE_BYTES:
        raise ValueError("a batch file over the Batch API's limits was built")  # planner bug
    return data


@dataclasses.dataclass
class Parsed:
    """Per request line (custom_id): its vectors, or why it failed."""

    vectors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    tokens: int = 0


def decode_embeddings(body: Any, count: int, dimensions: int) -> np.ndarray:
    """The vectors of one ``/v1/embeddings`` response body, in input order, validated exactly
    as a synchronous answer is (:func:`clipembed.embedding.providers.openai.decode_vectors`)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise errors.InvalidResponseError("the response has no data list")
    pairs = []
    for item in body["data"]:
        if not isinstance(item, dict) or not isinstance(item.get("index"), int):
            raise errors.InvalidResponseError("an item is not an object with an integer index")
        pairs.append((item["index"], item.get("embedding")))
    return decode_vectors(pairs, count=count, dimensions=dimensions)


def parse(lines: Iterable[bytes], expected: dict[str, int], *, dimensions: int) -> Parsed:
    """Output and error file lines -> vectors per custom_id, failures per custom_id.

    ``expected`` maps each custom_id of the batch to its number of inputs; a line for an
    unknown custom_id is ignored (it cannot be ours), a duplicate keeps the first answer.
    """
    out = Parsed()
    for raw in lines:
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a torn line cannot be attributed: its request stays unanswered
        cid = line.get("custom_id") if isinstance(line, dict) else None
        if cid not in expected or cid in out.vectors or cid in out.failures:
            continue
        response = line.get("response") or {}
        error = line.get("error")
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if isinstance(error, dict) and error.get("code") in NOT_RUN:
            continue  # never ran (the batch expired or was cancelled): re-planned, not failed
        if error or status != 200:
            out.failures[cid] = _reason(error, status, body)
            continue
        try:
            out.vectors[cid] = decode_embeddings(body, expected[cid], dimensions)
        except errors.InvalidResponseError as exc:
            out.failures[cid] = f"invalid answer: {exc}"
            continue
        usage = body.get("usage") if isinstance(body, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            out.tokens += usage["prompt_tokens"]
    return out


def _reason(error: Any, status: Any, body: Any) -> str:
    detail: Any = error
    if not detail and isinstance(body, dict):
        detail = body.get("error")
    if isinstance(detail, dict):
        code = detail.get("code") or detail.get("type") or ""
        message = str(detail.get("message") or "")[:300]
        text = f"{code}: {message}".strip(": ")
    else:
        text = str(detail or "")[:300]
    return f"{status or 'error'} {text}".strip()
