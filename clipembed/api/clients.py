"""Who the client is: forwarded headers believed only from trusted proxies, and the access log.

Every per-client defence (the sign-in throttle, the search limits) and every log line needs the
client's address, and an address taken from a header the client wrote is no address at all.
uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default, so anything on the machine, or a
proxy that passes the header through, could be anyone it liked (issue 22: 50 wrong sign-ins
without a 429, and ``client=6.6.6.6 token=sec`` forged into log lines). So:

- ``clipembed serve`` runs uvicorn with its proxy handling and access log off
  (:func:`server_config`); this module does both;
- :class:`ClientAddress` believes ``X-Forwarded-For`` and ``X-Forwarded-Proto`` only when the
  peer is in ``CLIPEMBED_TRUSTED_PROXIES`` (default: none), and then walks the list from the
  right, past trusted proxies, to the first address that is not one (:func:`resolve`). Only a
  well-formed IP address is ever taken; ``Forwarded`` and ``X-Forwarded-Host`` are ignored.
  The result replaces ``scope["client"]``: the throttles, the logs and the routes read that;
- :class:`AccessLog` writes one line per request with that same client, the path and the query
  string with every secret parameter masked (:func:`clipembed.redaction.redact_params`), and
  anything that is not printable ASCII percent-escaped, so a request cannot forge a log field.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipembed import redaction
from clipembed.settings import IPNetwork

logger = logging.getLogger("clipembed.access")

SCHEMES = ("http", "https")
MAX_HOPS = 20  # X-Forwarded-For entries looked at, from the right
# printable ASCII except space, '"' and '\\': what a request target may show in a log line
_SAFE = frozenset(range(0x21, 0x7F)) - {0x22, 0x5C}


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from one X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5``)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def trusted(address: str | None, proxies: Sequence[IPNetwork]) -> bool:
    ip = parse_ip(address) if address else None
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in proxies)


def resolve(peer: str | None, forwarded_for: str | None, proxies: Sequence[IPNetwork]) -> str:
    """The client: the peer, unless it is a trusted proxy; then the rightmost address of
    ``X-Forwarded-For`` that is not one. An entry that is not an IP address ends the walk
    (the last trusted hop stands for the client)."""
    client = peer or "unknown"
    if not forwarded_for or not trusted(peer, proxies):
        return client
    hops = [h for h in forwarded_for.split(",") if h.strip()][-MAX_HOPS:]
    for hop in reversed(hops):
        if not trusted(client, proxies):
            break
        ip = parse_ip(hop)
        if ip is None:
            break
        client = str(ip)
    return client


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name]
    return ",".join(values) if values else None


class ClientAddress:
    """Rewrites ``scope["client"]`` (and the scheme) from forwarded headers of trusted proxies."""

    def __init__(self, app: ASGIApp, *, proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.proxies = tuple(proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        peer_host = peer[0] if peer else None
        if scope["type"] == "http" and self.proxies and trusted(peer_host, self.proxies):
            client = resolve(peer_host, _header(scope, b"x-forwarded-for"), self.proxies)
            scope["client"] = (client, peer[1] if peer and client == peer_host else 0)
            # the nearest proxy's word on the scheme (the Secure flag of the session cookie)
            proto = (_header(scope, b"x-forwarded-proto") or "").split(",")[-1].strip().lower()
            if proto in SCHEMES:
                scope["scheme"] = proto
        await self.app(scope, receive, send)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def loggable_target(scope: Scope) -> str:
    """Path and query as sent, secrets masked, every unsafe byte percent-escaped."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    query = scope.get("query_string", b"")
    if query:
        query = redaction.redact_params(query.decode("latin-1"), url=True).encode("latin-1")
        raw = raw + b"?" + query
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw[:2048])


class AccessLog:
    """One line per HTTP request: client, method, target (redacted), status and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            logger.info(
                "request",
                extra={
                    "client": client_of(scope),
                    "method": str(scope.get("method", ""))[:16],
                    "path": loggable_target(scope),
                    "status": status or 500,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )


def server_config(app: ASGIApp, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn as ``clipembed serve`` runs it: uvicorn neither believes forwarded headers nor
    writes its own access log (both are done above), and its log lines go through clipembed's
    handler (``log_config=None``), redaction included."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=False,
        access_log=False,
        log_config=None,
        **options,
    )
