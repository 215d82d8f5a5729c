"""Access over real sockets: the failure throttle never locks out a valid token, forwarded
headers count only from trusted proxies, redirects are relative, the sign-in page says only
what its codes say (issue 22, items 2, 4 and 6)."""

from __future__ import annotations

import re

import httpx

from tests.plugins.admin import bearer
from tests.plugins.rawhttp import raw_exchange

pytest_plugins = ["tests.plugins.browser", "tests.plugins.security"]

WRONG = "ce_" + "w" * 43  # shaped like a token, valid for nobody


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, follow_redirects=False, timeout=30)


def sign_in(c: httpx.Client, token: str, **headers: str) -> httpx.Response:
    return c.post("/admin/login", data={"token": token}, headers=headers)


def test_a_valid_token_signs_in_after_failures_from_the_same_address(secure_server):
    served = secure_server()
    limit = served.cfg.clipembed_auth_failures_per_minute
    with client(served.base) as c:
        for _ in range(limit):
            assert sign_in(c, WRONG).status_code == 401
        throttled = sign_in(c, WRONG)
        assert throttled.status_code == 429 and 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "Too many failed attempts" in throttled.text
        ok = sign_in(c, served.token)
        assert ok.status_code == 303 and ok.headers["location"] == "/admin"
        assert c.get("/admin").status_code == 200  # the session works
        assert sign_in(c, WRONG).status_code == 429  # failures stay throttled meanwhile


def test_wrong_bearer_tokens_are_throttled_and_a_valid_one_always_passes(secure_server):
    served = secure_server()
    limit = served.cfg.clipembed_auth_failures_per_minute
    paths = ["/status", "/metrics", "/admin", "/admin/workers"]
    with client(served.base) as c:
        for i in range(limit):
            r = c.get(paths[i % len(paths)], headers=bearer(WRONG))
            assert r.status_code in (401, 303), r.status_code  # a page sends a browser away
        for path in paths:
            r = c.get(path, headers=bearer(WRONG))
            assert r.status_code == 429 and "retry-after" in r.headers, path
            assert r.json()["detail"].startswith("too many failed attempts")
        for path in paths:
            assert c.get(path, headers=bearer(served.token)).status_code == 200, path
        metrics = c.get("/metrics", headers=bearer(served.token)).text
        assert re.search(
            r'clipembed_auth_failures_total\{answer="throttled",kind="bearer"\} [1-9]', metrics
        )
        overview = c.get("/admin", headers=bearer(served.token)).text
        failures = limit + len(paths)
        assert f'data-k="auth-failures">{failures}<' in overview
        assert f'data-k="auth-throttled">{len(paths)}<' in overview


def test_failures_are_counted_across_processes_through_redis(secure_server):
    """Two servers sharing one Redis: failures on one count on the other."""
    first, second = secure_server(), secure_server()
    limit = first.cfg.clipembed_auth_failures_per_minute
    with client(first.base) as a, client(second.base) as b:
        for i in range(limit):
            assert sign_in(a if i % 2 else b, WRONG).status_code == 401
        assert sign_in(b, WRONG).status_code == 429
        assert sign_in(a, WRONG).status_code == 429
        assert sign_in(b, second.token).status_code == 303


def test_the_global_limit_holds_a_guesser_with_many_addresses(secure_server):
    served = secure_server(
        clipembed_trusted_proxies="127.0.0.1",
        clipembed_auth_failures_per_minute=5,
        clipembed_auth_failures_per_minute_global=3,
    )
    with client(served.base) as c:
        for i in range(3):
            r = sign_in(c, WRONG, **{"X-Forwarded-For": f"203.0.113.{i + 1}"})
            assert r.status_code == 401
        r = sign_in(c, WRONG, **{"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 429  # a fresh address, but 4 failures in all
        ok = sign_in(c, served.token, **{"X-Forwarded-For": "203.0.113.10"})
        assert ok.status_code == 303


def test_a_forged_x_forwarded_for_from_an_untrusted_peer_is_ignored(secure_server, server_log):
    """No trusted proxy (the default): rotating X-Forwarded-For changes nothing; the throttle
    and every log line see the peer, and a forged value never reaches a log line."""
    served = secure_server()
    limit = served.cfg.clipembed_auth_failures_per_minute
    forged = [f"6.6.6.{i}" for i in range(limit)] + ["6.6.6.6 token=sec by=sec n=999"]
    with client(served.base) as c:
        answers = [
            sign_in(c, WRONG, **{"X-Forwarded-For": f, "X-Forwarded-Proto": "https"}).status_code
            for f in forged
        ]
        assert answers == [401] * limit + [429]
        ok = sign_in(c, served.token, **{"X-Forwarded-Proto": "https"})
        assert ok.status_code == 303 and "secure" not in ok.headers["set-cookie"].lower()
    access = server_log.wait_for_access(limit + 2)
    assert all("client=127.0.0.1" in line for line in access)
    lines = server_log.lines()
    assert not [line for line in lines if "6.6.6." in line or "by=sec" in line]
    refused = [line for line in lines if "sign-in refused" in line and "client=" in line]
    assert len(refused) == limit and all("client=127.0.0.1" in line for line in refused)


def test_a_trusted_proxy_names_the_client(secure_server, server_log):
    """Behind a trusted proxy each client has its own budget, and the logs name the client."""
    served = secure_server(clipembed_trusted_proxies="127.0.0.0/8")
    limit = served.cfg.clipembed_auth_failures_per_minute
    # the client's own left part is forged; the proxy appended what it saw (the rightmost)
    alice = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}
    bob = {"X-Forwarded-For": "198.51.100.8", "X-Forwarded-Proto": "https"}
    with client(served.base) as c:
        for _ in range(limit):
            assert sign_in(c, WRONG, **alice).status_code == 401
        assert sign_in(c, WRONG, **alice).status_code == 429
        assert sign_in(c, WRONG, **bob).status_code == 401  # another client's budget
        ok = sign_in(c, served.token, **bob)
        assert ok.status_code == 303 and "secure" in ok.headers["set-cookie"].lower()
    access = server_log.wait_for_access(limit + 3)
    assert sum("client=198.51.100.7" in line for line in access) == limit + 1
    assert sum("client=198.51.100.8" in line for line in access) == 2
    assert not [line for line in server_log.lines() if "6.6.6.6" in line]


def test_redirects_are_relative_whatever_the_host(secure_server):
    served = secure_server()
    slash = raw_exchange(served.address, "GET /admin/ HTTP/1.1\r\nHost: evil.example")
    assert slash.status in (307, 308) and slash.headers["location"] == "/admin"
    page = raw_exchange(served.address, "GET /admin HTTP/1.1\r\nHost: evil.example")
    assert page.status == 303 and page.headers["location"] == "/admin/login?next=/admin"
    with client(served.base) as c:
        r = c.post(
            "/admin/login",
            data={"token": served.token, "next": "/admin/failures"},
            headers={"Host": "evil.example"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/admin/failures"
    for answer in (slash, page):
        assert "evil" not in str(answer.headers)


def test_the_sign_in_page_says_only_what_its_codes_say(secure_server):
    served = secure_server()
    with client(served.base) as c:
        spoof = c.get("/admin/login", params={"error": "Your token expired: mail it to evil"})
        assert spoof.status_code == 200
        assert "evil" not in spoof.text and 'role="alert"' not in spoof.text
        assert "That token is not valid." in c.get("/admin/login?error=invalid").text
        # a stale session cookie: the sign-in page says why, from its own code
        c.cookies.set("clipembed_session", "stale")
        r = c.get("/admin")
        assert r.status_code == 303 and r.headers["location"].endswith("&error=expired")
        c.cookies.clear()
        assert "Your session has ended" in c.get(r.headers["location"]).text
