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

``GET /_stats`` reports what it saw: requests by status, inputs, tokens, the largest request,
every ``dimensions`` value, and how often each text was embedded successfully (to prove that no
text was embedded twice). ``POST /_reset`` clears the statistics and the limit windows.

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
import threading
import time
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
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


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class _State:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = threading.Lock()
        self.random = random.Random(options.seed)
        self.stopping = False
        self._encoding: Any = None
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
        """Change options at run time; all or nothing, so a typo changes nothing."""
        fields = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(f"unknown option(s): {', '.join(unknown)}")
        if "plan" in changes:
            plan = changes["plan"]
            if not isinstance(plan, list) or not all(str(p) in FAULTS for p in plan):
                raise ValueError(f"plan must be a list of {sorted(FAULTS)}")
            changes = dict(changes, plan=[str(p) for p in plan])
        with self.lock:
            for key, value in changes.items():
                setattr(self.options, key, value)
            if "seed" in changes:
                self.random = random.Random(changes["seed"])

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

    async def handle(request: Request) -> Response:
        o = state.options
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return _error(401, "You didn't provide an API key.", "invalid_request_error")
        if o.api_key is not None and auth[7:] != o.api_key:
            return _error(401, "Incorrect API key provided.", "invalid_request_error")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        model = body.get("model")
        raw = body.get("input")
        if not isinstance(model, str) or raw is None:
            return _error(400, "'model' and 'input' are required", "invalid_request_error")
        inputs = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(t, str) for t in inputs)
        ):
            return _error(
                400,
                "'input' must be a string or a non-empty array of strings",
                "invalid_request_error",
            )
        if len(inputs) > MAX_INPUTS:
            return _error(
                400, f"'input' must have at most {MAX_INPUTS} items", "invalid_request_error"
            )
        if any(t == "" for t in inputs):
            return _error(400, "'input' cannot contain an empty string", "invalid_request_error")
        native = NATIVE_DIMENSIONS.get(model)
        sent_dims = body.get("dimensions")
        dims = sent_dims
        if dims is None:
            dims = native or 1536
        if model in FIXED_DIMENSIONS and sent_dims is not None:
            return _error(
                400,
                "This model does not support specifying dimensions.",
                "invalid_request_error",
            )
        bad = not isinstance(dims, int) or isinstance(dims, bool) or dims < 1
        if bad or (native is not None and dims > native):
            return _error(
                400, f"This model does not support dimensions={dims}.", "invalid_request_error"
            )
        counts = await asyncio.to_thread(state.encoding.count_many, inputs)
        if max(counts) > MAX_TOKENS_PER_INPUT:
            return _error(
                400,
                f"This model's maximum context length is {MAX_TOKENS_PER_INPUT} tokens.",
                "invalid_request_error",
            )
        tokens = sum(counts)
        if tokens > MAX_TOKENS_PER_REQUEST:
            return _error(
                400,
                f"Requested {tokens} tokens, max {MAX_TOKENS_PER_REQUEST} tokens per request",
                "max_tokens_per_request",
            )

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
        as_base64 = body.get("encoding_format") == "base64"
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
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(
            json.dumps(payload).encode(), media_type="application/json", headers=headers
        )

    async def control(request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            state.apply(changes)
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error")
        with state.lock:
            return JSONResponse(dataclasses.asdict(state.options) | {"api_key": None})

    async def stats(request: Request) -> Response:
        with state.lock:
            return JSONResponse(state.stats())

    async def reset(request: Request) -> Response:
        with state.lock:
            state.reset()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
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
        """Change options now (same as ``POST /_control``); a bad option is a ValueError."""
        self.state.apply(changes)

    def reset(self) -> None:
        """Clear statistics and limit windows (same as ``POST /_reset``); options stay."""
        with self.state.lock:
            self.state.reset()

    def stats(self) -> dict[str, Any]:
        with self.state.lock:
            return self.state.stats()

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
