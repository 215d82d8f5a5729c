"""The console over real HTTP: access control on every route, sign-in, sessions, CSRF, escaping,
and /status equal to the database. Browser tests are in test_console_browser.py."""

from __future__ import annotations

import re

import httpx
import psycopg
import pytest

from clipembed import runtime
from clipembed.admin import auth
from clipembed.api.app import create_app
from clipembed.bulk import backfill
from tests.plugins.jobs import clip_record, load_clips

pytest_plugins = ["tests.plugins.browser"]

PAGES = ["/admin", "/admin/failures", "/admin/workers", "/admin/search?q=x"]
JSON = ["/status", "/metrics"]
HOSTILE_TITLE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
async def console(database_factory, openai_settings, tmp_path, live_server):
    url = database_factory.new(dimensions=768)
    records = [clip_record(i) for i in range(12)] + [clip_record(99, title=HOSTILE_TITLE)]
    await load_clips(url, records, tmp_path)
    cfg = openai_settings(database_url=url)
    async with runtime.open_runtime(cfg) as rt:
        await backfill.run(rt, limit=10)
    base = live_server(create_app(cfg))
    return base, url, cfg


async def new_token(cfg, name="ops"):
    async with runtime.open_runtime(cfg, with_service=False) as rt:
        return await auth.create_token(rt.pool, name)


def sql(url, statement, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else None


def dead_letter(url, title):
    sql(
        url,
        "INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at) "
        "SELECT id, 5, %s, now() FROM clips WHERE title = %s",
        (f"PermanentProviderError: bad input {HOSTILE_TITLE}", title),
    )
    sql(
        url,
        "DELETE FROM embedding_queue WHERE clip_id IN (SELECT id FROM clips WHERE title = %s)",
        (title,),
    )


def client(base):
    return httpx.Client(base_url=base, follow_redirects=False, timeout=30)


async def test_without_any_token_the_console_is_locked_never_open(console):
    base, _, _ = console
    with client(base) as c:
        for path in [*PAGES, "/admin/login"]:
            r = c.get(path)
            assert r.status_code == 401 and "clipembed admin token create" in r.text, path
            assert "<form" not in r.text or 'action="/admin/logout"' not in r.text
        for path in JSON:
            r = c.get(path)
            assert r.status_code == 401 and "admin token create" in r.json()["detail"]


async def test_every_admin_route_needs_credentials(console):
    base, _, cfg = console
    await new_token(cfg)
    with client(base) as c:
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/admin/login"), path
        for path in JSON:
            assert c.get(path).status_code == 401, path
        for path in ("/admin/failures/retry", "/admin/logout"):
            r = c.post(path, data={"all": "true", "confirm": "yes"})
            assert r.status_code in (303, 401), path
        assert c.get("/search", params={"q": "clutch"}).status_code == 200  # public by default


async def test_wrong_tokens_reveal_nothing_and_a_revoked_token_stops_working(console):
    base, _, cfg = console
    token = await new_token(cfg, "alice")
    with client(base) as c:
        ok = c.get("/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        async with runtime.open_runtime(cfg, with_service=False) as rt:
            assert await auth.revoke_token(rt.pool, "alice")
        revoked = c.get("/status", headers={"Authorization": f"Bearer {token}"})
        unknown = c.get("/status", headers={"Authorization": "Bearer ce_nobody"})
        assert revoked.status_code == unknown.status_code == 401
        assert revoked.json() == unknown.json()  # the same answer for both


async def test_sign_in_sets_a_strict_http_only_session_and_failures_are_throttled(console):
    base, _, cfg = console
    token = await new_token(cfg)
    with client(base) as c:
        for _ in range(cfg.clipembed_auth_failures_per_minute):
            assert c.post("/admin/login", data={"token": "ce_wrong"}).status_code == 401
        throttled = c.post("/admin/login", data={"token": "ce_wrong"})
        assert throttled.status_code == 429 and "retry-after" in throttled.headers
        # the right token is never locked out by other people's failures
        r = c.post("/admin/login", data={"token": token, "next": "https://evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/admin"  # no open redirect
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = c.get("/admin")
        assert page.status_code == 200 and "Coverage" in page.text
        for header in ("content-security-policy", "x-content-type-options", "x-frame-options"):
            assert header in page.headers
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def csrf_of(html):
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def test_retry_needs_csrf_and_confirmation_and_requeues(console):
    base, url, cfg = console
    token = await new_token(cfg)
    dead_letter(url, "clutch play number 11")
    with client(base) as c:
        c.post("/admin/login", data={"token": token})
        page = c.get("/admin/failures")
        assert "clutch play number 11" in page.text
        (clip_id,) = sql(url, "SELECT clip_id::text FROM embedding_dead_letters")[0]
        refused = c.post("/admin/failures/retry", data={"ids": clip_id, "confirm": "yes"})
        assert refused.status_code == 403
        assert sql(url, "SELECT count(*) FROM embedding_dead_letters")[0][0] == 1
        csrf = csrf_of(page.text)
        confirm = c.post("/admin/failures/retry", data={"ids": clip_id, "csrf": csrf})
        assert confirm.status_code == 200 and "Yes, retry" in confirm.text
        assert sql(url, "SELECT count(*) FROM embedding_dead_letters")[0][0] == 1
        done = c.post(
            "/admin/failures/retry", data={"ids": clip_id, "csrf": csrf, "confirm": "yes"}
        )
        assert done.status_code == 303 and "retried=1" in done.headers["location"]
    assert sql(url, "SELECT count(*) FROM embedding_dead_letters")[0][0] == 0
    assert (
        sql(url, "SELECT count(*) FROM embedding_queue WHERE clip_id = %s", (clip_id,))[0][0] == 1
    )


async def test_an_expired_session_is_refused(console):
    base, url, cfg = console
    token = await new_token(cfg)
    with client(base) as c:
        c.post("/admin/login", data={"token": token})
        assert c.get("/admin").status_code == 200
        sql(url, "UPDATE clipembed_admin_sessions SET expires_at = now() - interval '1 minute'")
        r = c.get("/admin")
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")


async def test_hostile_titles_are_escaped_on_every_page(console):
    base, url, cfg = console
    token = await new_token(cfg)
    dead_letter(url, HOSTILE_TITLE)
    headers = {"Authorization": f"Bearer {token}"}
    with client(base) as c:
        for path in ("/admin", "/admin/failures", "/admin/search?q=alert+script+img"):
            body = c.get(path, headers=headers).text
            assert "<script>alert" not in body and "<img src=x" not in body, path
            assert "&lt;script&gt;" in body, path
        r = c.get("/admin/search?q=%FF%FE%C3", headers=headers)  # not UTF-8
        assert r.status_code in (200, 422), r.text[:200]
        long = c.get("/admin/search", params={"q": "x" * 5000}, headers=headers)
        assert long.status_code == 422


async def test_status_equals_the_database(console):
    base, url, cfg = console
    token = await new_token(cfg)
    sql(url, "UPDATE clips SET is_removed = true WHERE twitch_clip_id IN ('Clip1', 'Clip11')")
    sql(
        url,
        "UPDATE clips SET title = 'edited title' WHERE id = "
        "(SELECT id FROM clips WHERE embedding IS NOT NULL AND NOT is_removed LIMIT 1)",
    )
    dead_letter(url, "clutch play number 5")
    with client(base) as c:
        s = c.get("/status", headers={"Authorization": f"Bearer {token}"}).json()
    ((live, removed, embedded, missing),) = sql(
        url,
        "SELECT count(*) FILTER (WHERE NOT is_removed), count(*) FILTER (WHERE is_removed), "
        "count(*) FILTER (WHERE NOT is_removed AND embedding IS NOT NULL AND embedding_model = %s), "
        "count(*) FILTER (WHERE NOT is_removed AND embedding IS NULL) FROM clips",
        (cfg.model,),
    )
    cov = s["coverage"]
    assert (cov["live"], cov["removed"], cov["embedded"], cov["missing"]) == (
        live,
        removed,
        embedded,
        missing,
    )
    assert cov["stale"] == 1  # one clip has a vector and a queued edit
    assert s["backlog"]["dead"] == 1 and s["last_errors"][0]["state"] == "dead"
    assert s["throughput"]["60m"]["clips_per_minute"] * 60 >= 10  # the backfill's rollup
    assert s["spend"]["today"]["tokens"] > 0
    with client(base) as c:  # every /status figure is also a Prometheus metric
        text = c.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
    assert f'clipembed_status_clips{{state="live"}} {float(live)}' in text
    assert f'clipembed_status_backlog{{state="dead"}} {float(1)}' in text


async def test_the_bulk_pace_is_shown_as_the_last_change_left_it(console):
    """The adaptive pace's events (clipembed.bulk.adaptive_pace): none yet reads "full"; the
    last change is in /status and on the overview, slowed or back to full."""
    base, url, cfg = console
    token = await new_token(cfg)
    headers = {"Authorization": f"Bearer {token}"}
    with client(base) as c:
        assert c.get("/status", headers=headers).json()["bulk_pace"] is None
        assert "Bulk pace: full (never slowed for search)" in c.get("/admin", headers=headers).text
        event = (
            '{"rate": 12.5, "search_ms": 431.0, "target_ms": 200, "by": "backfill",'
            ' "reason": "search ran past the target"}'
        )
        sql(url, "INSERT INTO clipembed_events (kind, detail) VALUES ('bulk_pace', %s)", (event,))
        pace = c.get("/status", headers=headers).json()["bulk_pace"]
        assert (pace["clips_per_s"], pace["search_ms"], pace["by"]) == (12.5, 431.0, "backfill")
        page = c.get("/admin", headers=headers).text
        assert "<strong>12.5 clips/s</strong>, slowed by the backfill" in page
        assert "search 431 ms, target 200 ms" in page
        sql(
            url,
            "INSERT INTO clipembed_events (kind, detail, at) VALUES ('bulk_pace', %s, now() + "
            "interval '1 second')",
            ('{"rate": 0, "reason": "search is calm: back to full pace", "by": "backfill"}',),
        )
        page = c.get("/admin", headers=headers).text
        assert "Bulk pace: full since" in page and "back to full pace" in page
