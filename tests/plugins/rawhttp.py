"""Raw HTTP/1.1 over a plain socket, for what httpx will not send: a ``Content-Length`` with no
body behind it, chunks without their end, a forged ``Host``. Every wait has a deadline (a socket
timeout); nothing sleeps."""

from __future__ import annotations

import dataclasses
import select
import socket
from collections.abc import Iterable, Iterator

DEADLINE = 15.0  # seconds any one socket operation may take


@dataclasses.dataclass
class Answer:
    status: int  # 0: the connection ended before any answer
    headers: dict[str, str]
    body: bytes
    #: bytes of request body the client managed to send before the answer (or the reset)
    sent: int = 0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raw_exchange(
    address: tuple[str, int],
    head: str,
    body: Iterable[bytes] = (),
    *,
    stop_when_answered: bool = True,
) -> Answer:
    """Send ``head`` (request line and headers, without the blank line) and then ``body``'s
    pieces as they come, and read the answer. With ``stop_when_answered`` the client stops
    sending as soon as an answer is readable (as a real client would); a reset while sending
    ends the sending. Fails after :data:`DEADLINE` seconds of silence."""
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
        sent = 0
        for piece in body:
            if stop_when_answered and _readable(sock):
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        answer = _read_answer(sock)
        answer.sent = sent
        return answer


def _readable(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


def _read_answer(sock: socket.socket) -> Answer:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    if not data:
        return Answer(0, {}, b"")  # closed (or reset) before any answer
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        raise AssertionError(f"no HTTP answer, got {data[:80]!r}")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    try:
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except ConnectionResetError:
        pass
    return Answer(status, headers, rest[:length])


def chunked(pieces: Iterable[bytes], *, end: bool = True) -> Iterator[bytes]:
    """``pieces`` in chunked transfer coding; without ``end``, the body never finishes."""
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if end:
        yield b"0\r\n\r\n"
