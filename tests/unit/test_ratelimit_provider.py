"""How the provider's headers correct the limiter: pure functions, no clock, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.embedding import ratelimit
from clipembed.embedding.providers.base import RateLimitInfo


@pytest.mark.parametrize(
    ("info", "reserve", "next_tokens", "hold"),
    [
        # nothing said, or plenty left: go on
        (RateLimitInfo(), 4, 100, 0.0),
        (RateLimitInfo(remaining_requests=10, reset_requests=30.0), 4, 0, 0.0),
        (RateLimitInfo(remaining_tokens=5000, reset_tokens=30.0), 1, 100, 0.0),
        # no requests left, limit unknown: hold for the whole announced reset
        (RateLimitInfo(remaining_requests=0, reset_requests=12.5), 1, 0, 12.5),
        # no requests left, 60 rpm known: one request is back after 1 s, not after the reset
        (RateLimitInfo(limit_requests=60, remaining_requests=0, reset_requests=59.0), 1, 0, 1.0),
        # fewer left than may be in flight (4): regain the 3 missing at 60 rpm
        (RateLimitInfo(limit_requests=60, remaining_requests=1, reset_requests=59.0), 4, 0, 3.0),
        # ...but never longer than the provider's own reset
        (RateLimitInfo(limit_requests=60, remaining_requests=0, reset_requests=0.5), 4, 0, 0.5),
        # tokens: fewer left than the next request carries
        (
            RateLimitInfo(limit_tokens=60_000, remaining_tokens=100, reset_tokens=40.0),
            1,
            1100,
            1.0,
        ),
        # both low: the longer hold wins
        (
            RateLimitInfo(
                limit_requests=60,
                remaining_requests=0,
                reset_requests=9.0,
                limit_tokens=6000,
                remaining_tokens=0,
                reset_tokens=9.0,
            ),
            1,
            300,
            3.0,
        ),
        # a reset of 0 means "already back"
        (RateLimitInfo(remaining_requests=0, reset_requests=0.0), 1, 0, 0.0),
    ],
)
def test_hold_table(info, reserve, next_tokens, hold):
    got = ratelimit.hold_seconds(info, reserve_requests=reserve, next_tokens=next_tokens)
    assert got == pytest.approx(hold)


@given(
    limit=st.integers(min_value=1, max_value=10_000),
    remaining=st.integers(min_value=0, max_value=10_000),
    reset=st.floats(min_value=0, max_value=120, allow_nan=False),
    reserve=st.integers(min_value=1, max_value=64),
)
def test_hold_is_bounded_by_the_reset(limit, remaining, reset, reserve):
    info = RateLimitInfo(limit_requests=limit, remaining_requests=remaining, reset_requests=reset)
    hold = ratelimit.hold_seconds(info, reserve_requests=reserve)
    assert 0.0 <= hold <= reset
    if remaining >= reserve:
        assert hold == 0.0


def test_a_tighter_provider_limit_is_adopted_and_a_looser_one_ignored():
    limiter = ratelimit.RateLimiter(requests_per_minute=500, tokens_per_minute=1_000_000)
    limiter.adopt(RateLimitInfo(limit_requests=3000, limit_tokens=5_000_000))
    assert (limiter.requests_per_minute, limiter.tokens_per_minute) == (500, 1_000_000)
    limiter.adopt(RateLimitInfo(limit_requests=60, limit_tokens=40_000))
    assert (limiter.requests_per_minute, limiter.tokens_per_minute) == (60, 40_000)
    assert (limiter.req_interval, limiter.tok_interval) == ratelimit.intervals(60, 40_000)
    assert limiter.req_interval == pytest.approx(60_000 / 59)  # one request below the limit


@pytest.mark.parametrize(
    ("rpm", "ms_per_request"),
    [(1, 60_000.0), (2, 30_000.0), (3, 30_000.0), (61, 1000.0), (3001, 20.0)],
)
def test_request_intervals(rpm, ms_per_request):
    assert ratelimit.intervals(rpm, 10**9)[0] == pytest.approx(ms_per_request)


def test_repr_shows_limits_not_the_redis_url():
    limiter = ratelimit.RateLimiter(requests_per_minute=60, tokens_per_minute=1000)
    assert repr(limiter) == "RateLimiter(rpm=60, tpm=1000, shared=False)"


def test_a_share_leaves_the_rest_of_the_budget_to_the_query_lane():
    bulk = ratelimit.RateLimiter(requests_per_minute=500, tokens_per_minute=1_000_000, share=0.9)
    assert (bulk.requests_per_minute, bulk.tokens_per_minute) == (450, 900_000)
    # the provider announces a lower tier: the share applies to it too
    bulk.adopt(RateLimitInfo(limit_requests=100, limit_tokens=200_000))
    assert (bulk.requests_per_minute, bulk.tokens_per_minute) == (90, 180_000)
    queries = ratelimit.RateLimiter(requests_per_minute=500, tokens_per_minute=1_000_000, share=0.1)
    assert (queries.requests_per_minute, queries.tokens_per_minute) == (50, 100_000)
