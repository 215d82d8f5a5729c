"""The retry policy, read as the table in issue 2."""

from __future__ import annotations

import pytest

from clipembed import errors
from clipembed.embedding import service


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (errors.RateLimitedError("429", retry_after=1.0), True),
        (errors.RetryableProviderError("500", status_code=500), True),
        (errors.RetryableProviderError("502", status_code=502), True),
        (errors.RetryableProviderError("timed out"), True),
        (errors.RetryableProviderError("connection refused"), True),
        (errors.InvalidResponseError("wrong length"), True),
        (errors.PermanentProviderError("bad request", status_code=400), False),
        (errors.PermanentProviderError("bad key", status_code=401), False),
        (errors.PermanentProviderError("forbidden", status_code=403), False),
        (errors.PermanentProviderError("no such model", status_code=404), False),
        (errors.ConfigurationError("x"), False),
        (ValueError("bug"), False),
    ],
)
def test_what_is_retried(exc, retried):
    assert service.should_retry(exc) is retried


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_backoff_is_exponential_with_jitter_and_capped(attempt, rand):
    ceiling = min(service.BACKOFF_MAX, service.BACKOFF_BASE * 2 ** (attempt - 1))
    wait = service.backoff(attempt, rand=rand)
    assert ceiling / 2 <= wait <= ceiling


def test_backoff_never_sooner_than_retry_after():
    assert service.backoff(1, retry_after=7.5, rand=0.0) == 7.5
    assert service.backoff(1, retry_after=0.01, rand=1.0) == service.BACKOFF_BASE
