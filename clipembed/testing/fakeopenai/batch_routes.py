"""The fake's Files and Batch APIs: /v1/files and /v1/batches, as the SDK calls them (cursor
pages, 404s and 400s in OpenAI's shapes), over the shared :class:`_State`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

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
    _error,
    _new_id,
)
from clipembed.testing.fakeopenai.records import (
    _Batch,
    _File,
)
from clipembed.testing.fakeopenai.state import _State


def routes(state: _State, auth_error: Callable[[Request], Response | None]) -> list[Route]:
    """The Files and Batch API routes over ``state``; ``auth_error`` is the app's key check."""

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

    return [
        Route("/v1/files", files_create, methods=["POST"]),
        Route("/v1/files", files_list, methods=["GET"]),
        Route("/v1/files/{file_id}", files_retrieve, methods=["GET"]),
        Route("/v1/files/{file_id}", files_delete, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", files_content, methods=["GET"]),
        Route("/v1/batches", batches_create, methods=["POST"]),
        Route("/v1/batches", batches_list, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batches_retrieve, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batches_cancel, methods=["POST"]),
    ]
