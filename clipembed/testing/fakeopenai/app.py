"""The fake's HTTP app: /v1/embeddings and the control routes; /v1/files and /v1/batches come
from :mod:`.batch_routes`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clipembed.testing.fakeopenai import batch_routes
from clipembed.testing.fakeopenai.protocol import (
    Options,
    _error,
    check_embedding_body,
    embedding_payload,
    native_only_body,
    text_digest,
    vector_for,
)
from clipembed.testing.fakeopenai.state import _State


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
        body = native_only_body(body, state.options.native_only_models)
        if isinstance(body, tuple):
            return JSONResponse(body[1], status_code=body[0])
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
        vectors = [vector_for(t, out_dims, o.vectors) for t in inputs]
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
            *batch_routes.routes(state, auth_error),
            Route("/_control", control, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )
    app.state.fake = state
    return app
