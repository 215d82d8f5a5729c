"""The console's pure parts: charts, the failure throttle, CSRF comparison, redirects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.admin import access, auth, charts, throttle


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (0.3, 0.5), (1, 1), (7, 10), (12, 20), (45, 50), (1234, 2000)]
)
def test_axis_tops_are_round(value, top):
    assert charts.nice_max(value) == pytest.approx(top)


@given(st.lists(st.one_of(st.none(), st.floats(min_value=-1e12, max_value=1e12)), max_size=120))
def test_any_series_renders_and_escapes(values):
    svg = charts.line_chart(values, title="<b>t</b>", unit="&")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg


def test_gaps_break_the_line_and_empty_says_so():
    assert svg_lines(charts.line_chart([1, 2, None, 3, 4], title="t")) == 2
    assert "no data yet" in charts.line_chart([None, None], title="t")


def svg_lines(svg):
    return svg.count("<polyline")


async def test_the_throttle_answers_failures_429_past_the_limit_per_client_and_in_all():
    """The throttle has no say over a valid token (the routes check it first): its one
    question is how to answer a failure, 401 or 429 for how long."""
    t = throttle.AuthThrottle(per_client=3, overall=5)
    for _ in range(3):
        assert await t.failed("10.0.0.1", "signin") == 0  # within the limit: a 401
    wait = await t.failed("10.0.0.1", "signin")  # the 4th: a 429, for at most a minute
    assert 0 < wait <= 60
    assert await t.failed("2001:db8::1", "bearer") == 0  # per client...
    assert await t.failed("10.0.0.3", "bearer") > 0  # ...and in all (6 > 5)
    figures = await t.figures()
    assert figures["failures_last_hour"] == 6 and figures["throttled_last_hour"] == 2


def test_csrf_is_needed_for_a_session_only():
    browser = auth.Principal(1, "ops", csrf="abc")
    assert auth.csrf_ok(browser, "abc")
    assert not auth.csrf_ok(browser, "abd") and not auth.csrf_ok(browser, None)
    assert auth.csrf_ok(auth.Principal(1, "ops"), None)  # Bearer: no cookie, no CSRF


@pytest.mark.parametrize(
    ("asked", "went"),
    [
        ("/admin/failures", "/admin/failures"),
        ("https://evil.example/", "/admin"),
        ("//evil.example", "/admin"),
        ("/admin\\..\\x", "/admin"),
        (None, "/admin"),
        ("/search", "/admin"),
    ],
)
def test_sign_in_only_redirects_inside_the_console(asked, went):
    assert access.safe_next(asked) == went
