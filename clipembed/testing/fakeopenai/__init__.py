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
import threading
import time
from typing import Any

import uvicorn

from clipembed.testing import servers
from clipembed.testing.fakeopenai.app import create_app
from clipembed.testing.fakeopenai.protocol import (  # noqa: F401 - the public names
    BATCH_ACTIONS,
    BATCH_COMPLETION_WINDOW_SECONDS,
    BATCH_ENDPOINT,
    BATCH_ENDPOINTS,
    BATCH_MAX_EMBEDDING_INPUTS,
    BATCH_MAX_FILE_BYTES,
    BATCH_MAX_LINES,
    BATCH_MODES,
    BATCH_TERMINAL,
    FAULTS,
    FILE_PURPOSES,
    FIXED_DIMENSIONS,
    GRACEFUL_SHUTDOWN_SECONDS,
    MAX_INPUTS,
    MAX_TOKENS_PER_INPUT,
    MAX_TOKENS_PER_REQUEST,
    NATIVE_DIMENSIONS,
    ORGANIZATION,
    VECTOR_MODES,
    WINDOW,
    EmbeddingRequest,
    Options,
    _error,
    _error_body,
    _new_id,
    check_embedding_body,
    embedding_payload,
    expected_vector,
    text_digest,
    vector_for,
)
from clipembed.testing.fakeopenai.state import _State

#: what an answer in flight may still take, beyond its latency_ms, when the server is renewed
#: (its own work: tokenizing, vectors; a "slow" answer stops sleeping at once)
ANSWER_WORK_SECONDS = 5.0


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

    def renew(self, **options: Any) -> FakeOpenAI:
        """As if just started with ``options`` (statistics, files and batches gone), same port.

        Answers still in flight (a "slow" one a client gave up on) are ended first, so that
        nothing of the last user is counted in the new statistics.
        """
        self.state.stopping = True  # a "slow" answer stops sleeping now
        limit = self.state.options.latency_ms / 1000 + ANSWER_WORK_SECONDS
        deadline = time.monotonic() + limit
        while self._server is not None and self._server.server_state.tasks:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake OpenAI: answers still running after {limit:.1f} s")
            time.sleep(0.01)
        self.state.renew(Options(**options))
        return self

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
    parser.add_argument(
        "--vectors", choices=VECTOR_MODES, default="hash", help="hash (tests) or words (recall)"
    )
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
            vectors=args.vectors,
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
