"""What an answer may repeat of its request: never its ``Host``, at most a prefix of bad input.

- **Redirects are relative.** Starlette builds the trailing-slash redirect (``/admin/`` ->
  ``/admin``) from the ``Host`` header, so ``Host: evil.example`` came back as
  ``Location: http://evil.example/admin`` (issue 22): a cache or a proxy that keys on the path
  could serve that to everyone. :class:`RelativeRedirects` turns the ``Location`` of every 3xx
  into a path on this origin (``/admin``); clipembed never redirects anywhere else.
- **Validation errors are short.** FastAPI's 422 lists every field error with the ``input`` it
  rejected, whole: a 100,000-character query came back in full. :func:`validation_error`
  answers the same shape with every string cut to :data:`ECHO_CHARS` characters, at most
  :data:`MAX_ERRORS` errors, and nothing nested deeper than a field error holds.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ECHO_CHARS = 100  # characters of a rejected input an answer may repeat
MESSAGE_CHARS = 300  # a validation message (pydantic's are short; this bounds the rest)
MAX_ERRORS = 20  # field errors in one 422
MAX_DEPTH = 4
ELLIPSIS = "…"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


def relative(location: str) -> str:
    """``location`` as a path on this origin: scheme and host dropped, ``//`` collapsed."""
    parts = urllib.parse.urlsplit(location.strip())
    path = "/" + parts.path.lstrip("/\\")
    return urllib.parse.urlunsplit(("", "", path, parts.query, parts.fragment))


class RelativeRedirects:
    """Every redirect's ``Location`` becomes a path: the request's ``Host`` is never echoed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def relative_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in REDIRECTS:
                message = dict(message)
                message["headers"] = [
                    (k, relative(v.decode("latin-1")).encode("latin-1"))
                    if k.lower() == b"location"
                    else (k, v)
                    for k, v in message.get("headers", ())
                ]
            await send(message)

        await self.app(scope, receive, relative_send)


def clip(value: Any, *, chars: int = ECHO_CHARS, depth: int = 0) -> Any:
    """``value`` (JSON-able) with strings cut to ``chars``, lists and objects to MAX_ERRORS."""
    if isinstance(value, str):
        return value if len(value) <= chars else value[:chars] + ELLIPSIS
    if depth >= MAX_DEPTH:
        return None if isinstance(value, (list, dict)) else value
    if isinstance(value, list):
        return [clip(v, chars=chars, depth=depth + 1) for v in value[:MAX_ERRORS]]
    if isinstance(value, dict):
        return {
            clip(str(k), chars=chars): clip(v, chars=chars, depth=depth + 1)
            for k, v in list(value.items())[:MAX_ERRORS]
        }
    return value


def short_error(error: dict[str, Any]) -> dict[str, Any]:
    """One field error as FastAPI writes it, with every echo of the input cut short."""
    out = clip(jsonable_encoder(error), depth=1)
    if isinstance(error.get("msg"), str):
        out["msg"] = clip(error["msg"], chars=MESSAGE_CHARS)
    return dict(out)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """The 422 of an invalid request: FastAPI's shape, short (module docstring)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(
        {"detail": [short_error(dict(e)) for e in errors[:MAX_ERRORS]]}, status_code=422
    )
