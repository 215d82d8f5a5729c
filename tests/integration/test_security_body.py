"""Request bodies over real sockets: a body over the limit never reaches the disk, and the
console's POSTs check credentials before they read a byte of body (issue 22, item 1).

The instrument: ``spool`` keeps every temporary file anyone creates in a directory of the
test's own (``tests/plugins/security.py``); the first test shows it does catch Starlette's
spooling (a 2 MiB file part, no limit: a 2 MiB file), the others that the app leaves it empty.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.plugins.rawhttp import chunked, raw_exchange

pytest_plugins = ["tests.plugins.browser", "tests.plugins.security"]

MiB = 1024 * 1024
BOUNDARY = "clipembedtestboundary"


def multipart_head(path: str, *, length: int | None = None) -> str:
    """Request line and headers of a multipart POST; chunked when ``length`` is None."""
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}"
    )


def one_part(size: int, *, filename: str | None = None, piece: int = 64 * 1024):
    """A multipart body with one part of ``size`` bytes (a file part with ``filename``)."""
    disposition = 'form-data; name="token"' + (f'; filename="{filename}"' if filename else "")
    yield (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for start in range(0, size, piece):
        yield b"x" * min(piece, size - start)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_the_instrument_sees_starlette_spool_a_file_part_to_disk(spool, live_server):
    """Without a limit, a 2 MiB file part becomes a 2 MiB temporary file (what issue 22 saw)."""

    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        return JSONResponse({"fields": len(form)})

    base = live_server(Starlette(routes=[Route("/upload", upload, methods=["POST"])]))
    r = httpx.post(f"{base}/upload", files={"f": ("f.bin", b"x" * (2 * MiB))}, timeout=30)
    assert r.status_code == 200
    assert len(spool.created) == 1 and spool.size() >= 2 * MiB


@pytest.mark.parametrize("path", ["/admin/login", "/admin/logout", "/admin/failures/retry"])
def test_a_declared_400_mb_body_is_refused_from_its_headers_alone(secure_server, spool, path):
    served = secure_server()
    answer = raw_exchange(served.address, multipart_head(path, length=400_000_000))
    assert answer.status == 413 and answer.headers.get("connection") == "close"
    assert "too large" in answer.text
    assert spool.created == [] and spool.size() == 0


@pytest.mark.parametrize("path", ["/admin/login", "/admin/failures/retry"])
def test_a_chunked_body_is_cut_at_the_limit(secure_server, spool, path):
    """No Content-Length: the chunks are counted. The body never ends, so only the count can
    be what answered (and with nothing left unread, the answer cannot be lost to a reset).
    The retry form is read only with credentials: this client has a token."""
    served = secure_server(clipembed_max_body_bytes=64 * 1024)
    head = multipart_head(path) + f"\r\nAuthorization: Bearer {served.token}"
    # a well-formed text part, so that nothing but the count can stop it: 64 KiB + 1 byte
    start, *data = list(one_part(64 * 1024, piece=32 * 1024))[:-1]
    over = [start, *data]
    assert sum(map(len, over)) == 64 * 1024 + len(start) > 64 * 1024
    answer = raw_exchange(served.address, head, chunked(over, end=False), stop_when_answered=False)
    assert answer.status == 413
    assert spool.created == [] and spool.size() == 0


@pytest.mark.parametrize("filename", [None, "t.bin"])
def test_an_endless_chunked_upload_never_touches_the_disk(secure_server, spool, filename):
    """A client that goes on sending after the answer (a 50 MiB text field, or file part): it
    is refused (413 at the limit; a file part may be refused sooner, 400, by the form reader
    that takes none) or finds the connection closed, and the temporary directory stays empty."""
    served = secure_server()
    body = chunked(one_part(50 * MiB, filename=filename))
    answer = raw_exchange(served.address, multipart_head("/admin/login"), body)
    assert answer.status in ((413, 0) if filename is None else (413, 400, 0))
    assert answer.sent < 50 * MiB  # the server stopped the upload long before its end
    assert spool.created == [] and spool.size() == 0
    # and the server is fine: the next request is served
    assert httpx.get(f"{served.base}/healthz", timeout=10).status_code == 200


def test_a_file_part_within_the_limit_is_refused_without_spooling(secure_server, spool):
    served = secure_server()
    r = httpx.post(
        f"{served.base}/admin/login", files={"token": ("t.bin", b"x" * 1000)}, timeout=10
    )
    assert r.status_code == 400  # forms take no file part
    assert spool.created == [] and spool.size() == 0


@pytest.mark.parametrize("path", ["/admin/logout", "/admin/failures/retry"])
def test_an_unauthenticated_post_is_answered_before_its_body_is_read(secure_server, path):
    """The body is declared (within the limit) and never sent: a server that read it first
    would wait for it until the deadline; this one answers from the missing credentials."""
    served = secure_server()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000"
    )
    answer = raw_exchange(served.address, head)
    assert answer.status == 303 and answer.headers["location"].startswith("/admin/login")


def test_a_form_within_the_limit_still_works(secure_server):
    """The limit leaves the console's real forms alone: 500 ids fit in 64 KiB."""
    served = secure_server()
    with httpx.Client(base_url=served.base, timeout=10) as c:
        r = c.post(
            "/admin/failures/retry",
            data={"ids": [f"00000000-0000-0000-0000-{i:012d}" for i in range(500)]},
            headers={"Authorization": f"Bearer {served.token}"},
        )
        assert r.status_code == 200 and "Yes, retry" in r.text  # the confirmation page
