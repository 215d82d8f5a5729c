"""The HTTP defences' pure parts: whose address a request is, what a log line shows of it,
relative redirects, short 422s, and the body limit as an ASGI app called in memory."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import settings
from clipembed.api import bodylimit, clients, responses

PROXIES = settings.parse_networks("10.0.0.0/8, 127.0.0.1, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.5", "6.6.6.6", "203.0.113.5"),  # untrusted peer: the header is ignored
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the proxy appended the right one
        ("127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),  # past a chain of proxies
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted: the leftmost
        ("127.0.0.1", "6.6.6.6 token=sec", "127.0.0.1"),  # not an address: the proxy stands
        ("127.0.0.1", "garbage, 198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "198.51.100.7:4711", "198.51.100.7"),
        ("127.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
        ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),  # a mapped IPv4 peer
        ("fd00::1", "198.51.100.7", "198.51.100.7"),
        (None, "198.51.100.7", "unknown"),
    ],
)
def test_resolve(peer, xff, client):
    assert clients.resolve(peer, xff, PROXIES) == client


def test_no_trusted_proxy_means_the_peer_always():
    assert clients.resolve("127.0.0.1", "198.51.100.7", ()) == "127.0.0.1"


@given(st.text(max_size=200))
def test_whatever_a_forwarded_header_says_the_client_is_an_address_or_the_peer(header):
    client = clients.resolve("127.0.0.1", header, PROXIES)
    assert client == "127.0.0.1" or clients.parse_ip(client) is not None
    assert " " not in client and "=" not in client


def run(app, scope, body=()):
    """Call an ASGI app in memory with ``body`` pieces as http.request messages; what it sent."""
    messages = [{"type": "http.request", "body": b, "more_body": True} for b in body]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent = []

    async def receive():
        message = messages.pop(0) if messages else {"type": "http.disconnect"}
        return message

    async def send(message):
        sent.append(message)

    async def main():
        await app(scope, receive, send)

    asyncio.run(main())
    return sent


def http_scope(path="/", headers=(), **extra):
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "client": ("127.0.0.1", 5000),
        **extra,
    }


def reading_app(handed):
    async def app(scope, receive, send):
        while True:
            message = await receive()
            handed.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_a_declared_length_over_the_limit_never_calls_the_app():
    handed = []
    app = bodylimit.BodyLimit(reading_app(handed), max_bytes=100)
    sent = run(app, http_scope(headers=[(b"content-length", b"101")]), [b"x" * 101])
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert handed == []


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=10), st.integers(1, 200))
def test_a_streamed_body_reaches_the_app_only_up_to_the_limit(pieces, limit):
    handed: list[int] = []
    app = bodylimit.BodyLimit(reading_app(handed), max_bytes=limit)
    sent = run(app, http_scope(), [b"x" * n for n in pieces])
    assert sum(handed) <= limit
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert statuses == ([413] if sum(pieces) > limit else [200])


def test_the_body_limit_ignores_what_is_not_http():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(bodylimit.BodyLimit(app, max_bytes=1)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("http://evil.example/admin", "/admin"),
        ("https://evil.example", "/"),
        ("//evil.example/x?y=1", "/x?y=1"),
        ("/\\evil.example", "/evil.example"),
        ("/admin/login?next=%2Fadmin&error=expired", "/admin/login?next=%2Fadmin&error=expired"),
        ("/admin#top", "/admin#top"),
    ],
)
def test_redirects_become_paths_on_this_origin(location, shown):
    assert responses.relative(location) == shown


def test_every_redirect_location_is_made_relative():
    async def app(scope, receive, send):
        headers = [(b"location", b"http://evil.example/admin"), (b"x-other", b"http://k/")]
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    sent = run(responses.RelativeRedirects(app), http_scope())
    assert sent[0]["headers"] == [(b"location", b"/admin"), (b"x-other", b"http://k/")]


def test_a_validation_error_echoes_a_short_prefix():
    error = {
        "type": "string_too_long",
        "loc": ("query", "q" * 500),
        "msg": "String should have at most 500 characters",
        "input": "x" * 100_000,
        "ctx": {"max_length": 500, "error": ValueError("y" * 1000)},
    }
    short = responses.short_error(error)
    assert short["msg"] == error["msg"]
    assert short["input"] == "x" * responses.ECHO_CHARS + responses.ELLIPSIS
    assert len(short["loc"][1]) == responses.ECHO_CHARS + 1
    assert len(str(short["ctx"]["error"])) <= responses.ECHO_CHARS + 1


@given(
    st.recursive(st.text() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))
)
def test_clip_bounds_any_json_value(value):
    out = responses.clip(value)
    assert len(repr(out)) < 100_000  # bounded whatever came in

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, dict):
            for k, x in v.items():
                yield k
                yield from strings(x)

    assert all(len(s) <= responses.ECHO_CHARS + 1 for s in strings(out))


@pytest.mark.parametrize(
    ("raw_path", "query", "shown"),
    [
        (b"/search", b"q=clutch&token=abc", "/search?q=clutch&token=***"),
        (b"/a b", b"x=1%0A2", "/a%20b?x=1%0A2"),
        (b'/x"\n', b"", "/x%22%0A"),
        (b"/admin", b"API-Key=k&sig=s", "/admin?API-Key=***&sig=***"),
    ],
)
def test_the_access_log_shows_a_target_that_forges_nothing_and_hides_secrets(
    raw_path, query, shown
):
    scope = {"raw_path": raw_path, "query_string": query}
    assert clients.loggable_target(scope) == shown


def test_a_bad_trusted_proxy_setting_names_the_entry():
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300'")):
        settings.parse_networks("10.0.0.0/8, 10.0.0.300")
