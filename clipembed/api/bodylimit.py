"""A request-body limit on every route, enforced before anything parses or stores a body.

Nothing clipembed serves takes more than a form or a small JSON document, yet without a limit
any route would accept any body: Starlette's multipart parser spools a file part past 1 MiB to
a temporary file, so a few parallel uploads to the sign-in page could fill the disk (issue 22
measured a 412,688,978-byte temporary file, answered 401 afterwards).

:class:`BodyLimit` is a pure ASGI middleware, outside everything that reads a body:

- a ``Content-Length`` over the limit is answered 413 at once: the app is never called, not a
  byte of the body is read;
- a body without one (``Transfer-Encoding: chunked``) is counted as its chunks arrive; the
  chunk that crosses the limit is never handed to the app, which is stopped there, and the
  client gets the same 413. Whatever the app was about to answer is dropped.

Both answers close the connection (``Connection: close``), so the server does not go on
reading an upload nobody wants. The limit (``CLIPEMBED_MAX_BODY_BYTES``, at most 1 MiB) stays
under Starlette's spooling threshold, so even a body within it never reaches the disk; and the
console's forms refuse file parts outright (:func:`clipembed.admin.access.read_form`).

Starlette 1.x ships a ``RequestBodyLimitMiddleware``; it calls the app before it looks at
``Content-Length`` and exists only in recent releases, so clipembed keeps this one.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipembed import metrics

STATUS = 413
DETAIL = "the request body is too large"


class BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body passes the limit."""


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's own answer to a body it never got whole: ours goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _refuse(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    """The declared length; an unreadable one counts as too large (it is a malformed request)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 1 << 62
    return None


async def _refuse(send: Send, max_bytes: int) -> None:
    metrics.BODY_TOO_LARGE.inc()
    body = json.dumps({"detail": f"{DETAIL}: at most {max_bytes} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": STATUS,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
