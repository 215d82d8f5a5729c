from __future__ import annotations

import pytest

from clipembed.embedding.providers import openai as openai_provider


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("0.5s", 0.5),
        ("1h2m3s", 3723.0),
        ("7", 7.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("1x", None),
    ],
)
def test_parse_duration(value, seconds):
    assert openai_provider.parse_duration(value) == seconds


def test_parse_ratelimit_headers_prefers_retry_after_ms():
    info = openai_provider.parse_ratelimit_headers(
        {
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-remaining-requests": "2999",
            "x-ratelimit-reset-requests": "20ms",
            "x-ratelimit-limit-tokens": "1000000",
            "x-ratelimit-remaining-tokens": "junk",
            "X-RateLimit-Reset-Tokens": "6m0s",
            "retry-after-ms": "1500",
            "retry-after": "2",
        }
    )
    assert info.limit_requests == 3000 and info.remaining_requests == 2999
    assert info.reset_requests == 0.02 and info.reset_tokens == 360.0
    assert info.remaining_tokens is None
    assert info.retry_after == 1.5


def test_retry_after_seconds_when_no_ms():
    assert openai_provider.parse_ratelimit_headers({"retry-after": "3"}).retry_after == 3.0


@pytest.mark.parametrize(
    "message",
    [
        "Incorrect API key provided: sk-test-0123456789abcdefSECRET.",
        "key sk-proj-abcdefghijklmnop bad",
    ],
)
def test_scrub_removes_keys(message):
    out = openai_provider.scrub(message, "sk-test-0123456789abcdefSECRET")
    assert "0123456789abcdefSECRET" not in out
    assert "abcdefghijklmnop" not in out
