"""The openai provider's pure parts: error mapping, secret scrubbing, decoding, headers.

No I/O: the provider is built (which makes an SDK client but opens no connection) and its
translation functions are fed SDK exceptions and response items made here.
"""

from __future__ import annotations

import base64
import types

import numpy as np
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import errors, settings
from clipembed.embedding.providers import openai as openai_provider

KEY = "sk-unit-0123456789abcdefSECRETSECRET"


@pytest.fixture(scope="module")
def provider():
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="openai",
        openai_api_key=KEY,
        embedding_api_base_url="http://127.0.0.1:9/v1",
        embedding_dimensions=4,
        redis_url="none",
    )
    return openai_provider.OpenAIProvider(cfg)


def status_error(status, body, headers=None):
    http = type(openai.DEFAULT_CONNECTION_LIMITS).__module__.split(".")[0]
    httpx = __import__(http)  # the httpx flavour this SDK version uses
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/embeddings")
    response = httpx.Response(status, request=request, headers=headers or {}, json=body)
    message = body["error"]["message"] if isinstance(body, dict) else str(body)
    return openai.APIStatusError(message, response=response, body=body)


def body(message, code=None, kind="invalid_request_error"):
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "payload", "headers", "kind", "retry_after"),
    [
        (400, body("'input' cannot contain an empty string"), {}, "permanent", None),
        (401, body(f"Incorrect API key provided: {KEY}."), {}, "permanent", None),
        (403, body("Country not supported"), {}, "permanent", None),
        (404, body("The model does-not-exist does not exist"), {}, "permanent", None),
        (422, body("unprocessable"), {}, "permanent", None),
        (429, body("Rate limit reached", kind="requests"), {"retry-after-ms": "250"}, "rate", 0.25),
        (429, body("Rate limit reached", kind="tokens"), {"retry-after": "3"}, "rate", 3.0),
        (429, body("Rate limit reached"), {}, "rate", None),
        (429, body("You exceeded your current quota", "insufficient_quota"), {}, "permanent", None),
        (408, body("timeout"), {}, "retryable", None),
        (409, body("conflict"), {}, "retryable", None),
        (500, body("The server had an error", kind="server_error"), {}, "retryable", None),
        (502, "<html>Bad gateway</html>", {}, "retryable", None),
        (503, body("The engine is currently overloaded"), {}, "retryable", None),
    ],
)
def test_error_mapping(provider, status, payload, headers, kind, retry_after):
    err = provider._status_error(status_error(status, payload, headers))
    expected = {
        "permanent": errors.PermanentProviderError,
        "rate": errors.RateLimitedError,
        "retryable": errors.RetryableProviderError,
    }[kind]
    assert isinstance(err, expected)
    if kind == "retryable":  # plain retryable: not a 429, not "invalid response"
        assert type(err) is errors.RetryableProviderError
    if kind == "rate":
        assert err.retry_after == retry_after
    assert err.status_code == status
    assert str(status) in str(err)
    if isinstance(payload, dict):
        assert payload["error"]["message"].split(":")[0] in str(err)
    assert "0123456789abcdefSECRET" not in str(err) + repr(err)


@given(
    key_body=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
        min_size=8,
        max_size=80,
    ),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_scrub_never_leaves_the_key(key_body, before, after):
    key = "sk-" + key_body
    message = f"{before}{key}{after} and again {key}"
    assert key not in openai_provider.scrub(message, key)
    # Even without knowing the key, anything shaped like one loses all but its prefix.
    assert openai_provider.scrub(f" {key} ", None) == f" sk-{key_body[:4]}*** "


@pytest.mark.parametrize(
    "message",
    [
        f"Incorrect API key provided: {KEY}.",
        f"Authorization: Bearer {KEY}",
        "another key sk-proj-abcdefghijklmnopqrstuvwxyz in a proxy error",
    ],
)
def test_scrub_table(message):
    out = openai_provider.scrub(message, KEY)
    assert "0123456789abcdefSECRET" not in out
    assert "abcdefghijklmnopqrstuvwxyz" not in out


def test_no_key_in_reprs(provider):
    for text in (repr(provider), str(provider), repr(provider._client)):
        assert KEY not in text and "SECRET" not in text


def test_connection_pool_fits_the_concurrency(provider):
    pool = provider._client._client._transport._pool
    assert pool._max_connections == 4  # settings.embedding_max_concurrency default
    assert pool._max_keepalive_connections == 4


def item(index, vector, *, as_base64=True):
    vec = np.asarray(vector, dtype="<f4")
    emb = base64.b64encode(vec.tobytes()).decode() if as_base64 else vec.tolist()
    return types.SimpleNamespace(index=index, embedding=emb)


def test_decode_reorders_by_index_and_accepts_floats(provider):
    rows = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    data = [item(2, rows[2]), item(0, rows[0], as_base64=False), item(1, rows[1])]
    np.testing.assert_array_equal(provider._decode(data, 3), rows)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([item(0, [1, 2, 3, 4])], "1 vectors for 2"),
        ([item(0, [1, 2, 3, 4]), item(0, [1, 2, 3, 4])], "not 0..n-1"),
        ([item(0, [1, 2, 3, 4]), item(2, [1, 2, 3, 4])], "not 0..n-1"),
        ([item(0, [1, 2, 3, 4]), types.SimpleNamespace(embedding="")], "without an index"),
        ([item(0, [1, 2, 3, 4]), types.SimpleNamespace(index=1)], "without an embedding"),
        ([item(0, [1, 2, 3, 4]), item(1, [1, 2, 3])], "length 3"),
        ([item(0, [1, 2, 3, 4]), types.SimpleNamespace(index=1, embedding="%%%")], "undecodable"),
        ([item(0, [1, 2, 3, 4]), item(1, [1, np.inf, 3, 4])], "NaN or infinite"),
        ([item(0, [1, 2, 3, 4]), item(1, [0, 0, 0, 0])], "all-zero"),
    ],
)
def test_decode_rejects_what_must_not_be_stored(provider, data, fragment):
    with pytest.raises(errors.InvalidResponseError, match=fragment):
        provider._decode(data, 2)


@given(
    st.lists(
        st.tuples(st.integers(0, 500), st.sampled_from(["h", "m", "s", "ms"])),
        min_size=1,
        max_size=4,
    )
)
def test_parse_duration_sums_any_go_duration(parts):
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert openai_provider.parse_duration(text) == pytest.approx(
        sum(n * scale[u] for n, u in parts)
    )


@given(st.text(max_size=20))
def test_parse_duration_never_raises(text):
    value = openai_provider.parse_duration(text)
    assert value is None or value >= 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, {}),
        (
            {
                "x-ratelimit-limit-requests": "3000",
                "x-ratelimit-remaining-requests": "2999",
                "x-ratelimit-reset-requests": "20ms",
                "x-ratelimit-limit-tokens": "1000000",
                "x-ratelimit-remaining-tokens": "999950",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            {
                "limit_requests": 3000,
                "remaining_requests": 2999,
                "reset_requests": 0.02,
                "limit_tokens": 1_000_000,
                "remaining_tokens": 999_950,
                "reset_tokens": 360.0,
            },
        ),
        ({"X-RateLimit-Reset-Requests": "1s"}, {"reset_requests": 1.0}),
        ({"x-ratelimit-remaining-tokens": "lots"}, {}),
        ({"retry-after-ms": "1500", "retry-after": "2"}, {"retry_after": 1.5}),
        ({"retry-after-ms": "soon", "retry-after": "2"}, {"retry_after": 2.0}),
        ({"retry-after": "7"}, {"retry_after": 7.0}),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}),  # HTTP-date: ignored
    ],
)
def test_ratelimit_header_table(headers, expected):
    info = openai_provider.parse_ratelimit_headers(headers)
    fields = {
        "limit_requests",
        "limit_tokens",
        "remaining_requests",
        "remaining_tokens",
        "reset_requests",
        "reset_tokens",
        "retry_after",
    }
    for field in fields:
        assert getattr(info, field) == pytest.approx(expected.get(field)), field
