"""The fake's HTTP app: /v1/embeddings, /v1/files, /v1/batches and the control routes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clipembed.testing.fakeopenai.protocol import (
    BATCH_COMPLETION_WINDOW_SECONDS,
    BATCH_ENDPOINT,
    BATCH_ENDPOINTS,
    BATCH_TERMINAL,
    FILE_PURPOSES,
    Options,
    _error,
    _new_id,
    check_embedding_body,
    embedding_payload,
    native_only_body,
    text_digest,
    vector_for,
)
from clipembed.testing.fakeopenai.records import (
    _Batch,
    _File,
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
