"""The console's pure parts: charts, sign-in throttling, CSRF comparison, redirects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.admin import auth, charts, routes


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


def test_throttle_blocks_after_the_limit_and_forgets_after_a_minute():
    t = auth.SignInThrottle(limit=3, window=60)
    for i in range(3):
        assert t.blocked_for("a", now=100 + i) == 0
        t.failed("a", now=100 + i)
    assert t.blocked_for("a", now=103) == pytest.approx(57)
    assert t.blocked_for("b", now=103) == 0  # per client
    assert t.blocked_for("a", now=161) == 0
    t.failed("a", now=161)
    t.succeeded("a")
    assert t.blocked_for("a", now=162) == 0


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
    assert routes._safe_next(asked) == went
