"""The operations console in a real browser: Debian's Chromium (Playwright) against the real app
(uvicorn on a real socket), a real PostgreSQL, clips embedded through the fake OpenAI server.

What a person at the console sees is checked against the database itself: the overview's
figures equal ``SELECT count(*)`` queries run here, a dead letter retried from the failures page
is really back on the queue (and then embedded by a worker), sessions expire, forms without the
CSRF token are refused, the pages work with JavaScript off, and hostile clip titles are text.
The screenshot test writes ``docs/img/admin-*.png`` (1280x900 viewport, full page).

Synchronisation is Playwright's auto-waiting and ``expect``, or :func:`wait_for` with a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from clipembed import runtime, settings
from clipembed.admin import auth
from clipembed.api.app import create_app
from clipembed.bulk import backfill
from clipembed.realtime import worker
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.provider import subprocess_env
from tests.plugins.waiting import wait_for

pytest_plugins = ["tests.plugins.browser"]

expect = pytest.importorskip("playwright.async_api").expect

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
HOSTILE_ERROR = '<b id="boom">provider said</b><script>window.__pwned=3</script>'
VIEWPORT = {"width": 1280, "height": 900}

# The database's own answers, written independently of the console's counters.
COUNT_LIVE = "SELECT count(*) FROM clips WHERE NOT is_removed"
COUNT_REMOVED = "SELECT count(*) FROM clips WHERE is_removed"
COUNT_EMBEDDED = """
SELECT count(*) FROM clips
WHERE NOT is_removed AND embedding IS NOT NULL AND embedding_model = %s
"""
COUNT_MISSING = """
SELECT count(*) FROM clips
WHERE NOT is_removed AND (embedding IS NULL OR embedding_model IS DISTINCT FROM %s)
"""
COUNT_DEAD = "SELECT count(*) FROM embedding_dead_letters"


@dataclasses.dataclass
class Console:
    """One console under test: its database, its settings, its URL and an admin token."""

    database_url: str
    cfg: settings.Settings
    base: str
    token: str

    async def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as c:
            cur = await c.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def scalar(self, query: str, params: Sequence[Any] | None = None) -> Any:
        return (await self.rows(query, params))[0][0]

    async def embedded_ids(self) -> list[str]:
        rows = await self.rows(
            "SELECT id FROM clips WHERE embedding IS NOT NULL ORDER BY twitch_clip_id"
        )
        return [str(r[0]) for r in rows]

    async def unembedded_ids(self) -> list[str]:
        rows = await self.rows(
            "SELECT id FROM clips WHERE embedding IS NULL AND NOT is_removed "
            "ORDER BY twitch_clip_id"
        )
        return [str(r[0]) for r in rows]

    async def title(self, clip_id: str) -> str:
        return str(await self.scalar("SELECT title FROM clips WHERE id = %s", (clip_id,)))

    async def dead_letter(self, clip_id: str, error: str, *, attempts: int = 5) -> None:
        """Make ``clip_id`` a dead letter, as a worker does when it runs out of attempts."""
        await self.rows("DELETE FROM embedding_queue WHERE clip_id = %s", (clip_id,))
        await self.rows(
            "INSERT INTO embedding_dead_letters (clip_id, attempts, last_error, enqueued_at) "
            "VALUES (%s, %s, %s, now() - interval '1 hour')",
            (clip_id, attempts, error),
        )

    async def is_dead(self, clip_id: str) -> bool:
        q = "SELECT count(*) FROM embedding_dead_letters WHERE clip_id = %s"
        return bool(await self.scalar(q, (clip_id,)))

    async def is_queued(self, clip_id: str) -> bool:
        q = "SELECT count(*) FROM embedding_queue WHERE clip_id = %s"
        return bool(await self.scalar(q, (clip_id,)))


MakeConsole = Callable[..., Awaitable[Console]]


@pytest.fixture
def console_factory(database_factory, tmp_path, openai_settings, live_server) -> MakeConsole:
    """``await make(records, embed=N)``: clips imported, N embedded by a backfill, a token, and
    the real app served on a free port (stopped after the test)."""

    async def make(
        records: list[dict[str, Any]] | None = None, *, embed: int = 20, name: str = "ops"
    ) -> Console:
        url = database_factory.new(dimensions=768)
        records = records if records is not None else [clip_record(i) for i in range(25)]
        await load_clips(url, records, tmp_path)
        cfg = openai_settings(database_url=url)
        async with runtime.open_runtime(cfg) as rt:
            if embed:
                summary = await backfill.run(rt, limit=embed)
                assert summary.processed == embed, summary
            token = await auth.create_token(rt.pool, name)
        return Console(url, cfg, live_server(create_app(cfg)), token)

    return make


async def sign_in(page, console: Console, path: str = "/admin") -> None:
    """Ask for ``path``, get sent to the sign-in form, paste the token, land on ``path``."""
    await page.goto(console.base + path)
    await expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Admin token").fill(console.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(console.base + path)


async def figure(page, selector: str) -> int:
    text = (await page.locator(selector).inner_text()).strip()
    return int(text.replace(",", ""))


# ------------------------------------------------------------------------------ 1. sign-in


async def test_a_token_from_the_cli_signs_in_through_the_form_and_lands_on_the_overview(
    console_factory, page, fake_openai, redis_base_url, redis_prefix, tmp_path
):
    console = await console_factory(embed=5)
    # The token a person would get: printed by the real CLI, in a subprocess.
    env = subprocess_env(
        database_url=console.database_url,
        base_url=fake_openai.base_url,
        redis_url=redis_base_url,
        redis_prefix=redis_prefix,
        home=tmp_path / "cli-home",
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "clipembed", "admin", "token", "create", "--name", "alice"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("ce_") and token not in out.stderr

    await page.goto(console.base + "/admin")
    await expect(page).to_have_url(console.base + "/admin/login?next=/admin")
    # A wrong token is refused on the form, and says nothing more.
    await page.get_by_label("Admin token").fill("ce_not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")

    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(console.base + "/admin")
    await expect(page.get_by_role("heading", name=re.compile(r"^Overview"))).to_be_visible()
    await expect(page.locator("header .who")).to_have_text("alice")
    await expect(page.locator("#coverage dd[data-k=embedded]")).to_have_text("5")
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == auth.SESSION_COOKIE)
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert token not in session["value"]

    # Signing out ends the session: the console asks for the token again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/admin/login"))
    await page.goto(console.base + "/admin/failures")
    await expect(page).to_have_url(console.base + "/admin/login?next=/admin/failures")


# ------------------------------------------------------------------------------ 2. figures


async def test_the_overview_figures_equal_the_database_counts(console_factory, page):
    console = await console_factory(embed=20)
    embedded, unembedded = await console.embedded_ids(), await console.unembedded_ids()
    assert (len(embedded), len(unembedded)) == (20, 5)
    # Removed: one embedded clip (coverage loses it) and one that never was.
    removed = [embedded[0], unembedded[0]]
    await console.rows("UPDATE clips SET is_removed = true WHERE id = ANY(%s::uuid[])", (removed,))
    await console.dead_letter(unembedded[1], "openai: 400 input too long")

    await sign_in(page, console)
    model = console.cfg.model
    expected = {
        "embedded": await console.scalar(COUNT_EMBEDDED, (model,)),
        "live": await console.scalar(COUNT_LIVE),
        "missing": await console.scalar(COUNT_MISSING, (model,)),
        "removed": await console.scalar(COUNT_REMOVED),
    }
    # The database says what the set-up made (so the comparison below is not vacuous).
    assert expected == {"embedded": 19, "live": 23, "missing": 4, "removed": 2}
    shown = {k: await figure(page, f"#coverage dd[data-k={k}]") for k in expected}
    assert shown == expected
    dead = await console.scalar(COUNT_DEAD)
    assert dead == 1
    assert await figure(page, "#backlog dd[data-k=dead]") == dead
    await expect(page.locator("#coverage .big")).to_have_text(f"{19 / 23 * 100:.2f} %")

    # The dead figure links to the failures page, which lists that clip.
    await page.locator("#backlog dd[data-k=dead] a").click()
    await expect(page).to_have_url(console.base + "/admin/failures")
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator("tbody tr")).to_contain_text(await console.title(unembedded[1]))


# ------------------------------------------------------------------------------ 3. retry


async def test_dead_letters_retried_from_the_failures_page_are_requeued_and_embedded(
    console_factory, page
):
    console = await console_factory(embed=20)
    first, second = (await console.unembedded_ids())[:2]
    await console.dead_letter(first, "openai: 400 input too long", attempts=5)
    await console.dead_letter(second, "openai: 500 server error", attempts=5)
    first_title, second_title = await console.title(first), await console.title(second)

    await sign_in(page, console, "/admin/failures")
    await expect(page.locator("tbody tr")).to_have_count(2)

    # A row's own Retry button retries that clip alone, even with another one ticked.
    await page.get_by_label(f"select {first_title}", exact=True).check()
    row = page.locator("tbody tr", has_text=second_title)
    await row.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("heading", name="Retry 1 clip?")).to_be_visible()
    await expect(page.locator("form input[name=ids]")).to_have_count(1)
    await expect(page.locator("form input[name=ids]")).to_have_value(second)
    await page.get_by_role("button", name="Yes, retry").click()
    await expect(page).to_have_url(console.base + "/admin/failures?retried=1")
    await expect(page.get_by_role("status")).to_have_text("1 clip put back on the queue.")
    assert await console.is_queued(second) and not await console.is_dead(second)
    assert await console.is_dead(first) and not await console.is_queued(first)
    await expect(page.locator("tbody tr")).to_have_count(1)

    # The ticked checkbox and "Retry selected": confirmed on its own page.
    await page.get_by_label(f"select {first_title}", exact=True).check()
    await page.get_by_role("button", name="Retry selected").click()
    await expect(page.get_by_role("heading", name="Retry 1 clip?")).to_be_visible()
    await page.get_by_role("button", name="Yes, retry").click()
    await expect(page).to_have_url(console.base + "/admin/failures?retried=1")
    await expect(page.get_by_role("status")).to_have_text("1 clip put back on the queue.")
    await expect(page.locator("p.empty")).to_contain_text("No dead letters.")
    await expect(page.locator("tbody tr")).to_have_count(0)
    rows = await console.rows(
        "SELECT attempts, last_error FROM embedding_queue WHERE clip_id = %s", (first,)
    )
    assert rows == [(0, None)]  # fresh attempts
    assert await console.scalar(COUNT_DEAD) == 0

    # A worker embeds them.
    async with runtime.open_runtime(console.cfg) as rt:
        stats = await worker.Worker(rt).drain()
    assert stats.embedded >= 2, stats
    for clip in (first, second):
        got = await console.rows(
            "SELECT embedding IS NOT NULL, embedding_model FROM clips WHERE id = %s", (clip,)
        )
        assert got == [(True, console.cfg.model)]
        assert not await console.is_queued(clip)

    await page.reload()
    await expect(page.get_by_role("status")).to_have_text("1 clip put back on the queue.")
    await expect(page.locator("p.empty")).to_contain_text("No dead letters.")
    await page.get_by_role("link", name="Overview").click()
    await expect(page.locator("#backlog dd[data-k=dead]")).to_have_text("0")
    await expect(page.locator("#coverage dd[data-k=missing]")).to_have_text("0")


# ------------------------------------------------------------------------------ 4. sessions


async def test_an_expired_session_is_sent_back_to_the_sign_in_page(console_factory, page):
    console = await console_factory(embed=3)
    await sign_in(page, console)
    await expect(page.locator("#coverage dd[data-k=embedded]")).to_have_text("3")

    await console.rows(
        "UPDATE clipembed_admin_sessions SET expires_at = now() - interval '1 minute'"
    )
    await page.goto(console.base + "/admin/failures")
    await expect(page).to_have_url(console.base + "/admin/login?next=/admin/failures&error=expired")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_text("Your session has ended: sign in again.")
    await expect(page.locator("header nav")).to_have_count(0)  # nothing of the console shown
    # A POST with the expired session is refused the same way, and changes nothing.
    response = await page.context.request.post(
        console.base + "/admin/failures/retry", form={"all": "true", "confirm": "yes"}
    )
    assert response.url.startswith(console.base + "/admin/login")

    # Signing in again returns to the page that was asked for.
    await page.get_by_label("Admin token").fill(console.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(console.base + "/admin/failures")
    await expect(page.locator("p.empty")).to_contain_text("No dead letters.")


# ------------------------------------------------------------------------------ 5. CSRF


async def test_posts_without_the_csrf_token_are_refused(console_factory, page):
    console = await console_factory(embed=20)
    clip = (await console.unembedded_ids())[0]
    await console.dead_letter(clip, "openai: 400 input too long")
    await sign_in(page, console, "/admin/failures")
    retry_url = console.base + "/admin/failures/retry"

    # The context's request API carries the session cookie; without csrf: 403.
    response = await page.context.request.post(retry_url, form={"ids": clip, "confirm": "yes"})
    assert response.status == 403
    assert "This form has expired" in await response.text()
    wrong = {"csrf": "x" * 43, "ids": clip, "confirm": "yes"}
    assert (await page.context.request.post(retry_url, form=wrong)).status == 403
    assert await console.is_dead(clip) and not await console.is_queued(clip)

    # A form the page builds and submits itself without the field: refused too.
    async with page.expect_response(
        lambda r: r.url == retry_url and r.request.method == "POST"
    ) as refused:
        await page.evaluate(
            """(id) => {
                const form = document.createElement("form");
                form.method = "post";
                form.action = "/admin/failures/retry";
                for (const [name, value] of [["ids", id], ["confirm", "yes"]]) {
                    const input = document.createElement("input");
                    input.type = "hidden";
                    input.name = name;
                    input.value = value;
                    form.appendChild(input);
                }
                document.body.appendChild(form);
                form.submit();
            }""",
            clip,
        )
    assert (await refused.value).status == 403
    await expect(page.get_by_role("heading", name="Refused")).to_be_visible()
    assert await console.is_dead(clip)

    # Sign-out needs it as well: the session survives a forged sign-out.
    logout = await page.context.request.post(console.base + "/admin/logout", form={})
    assert logout.status == 403
    await page.goto(console.base + "/admin/failures")
    await expect(page).to_have_url(console.base + "/admin/failures")

    # The control: the same request with the page's token goes through (so the 403s above
    # were the missing token, not a missing cookie).
    csrf = await page.locator("form input[name=csrf]").first.get_attribute("value")
    assert csrf
    ok = await page.context.request.post(
        retry_url, form={"csrf": csrf, "ids": clip, "confirm": "yes"}
    )
    assert ok.status == 200 and ok.url == console.base + "/admin/failures?retried=1"
    assert await console.is_queued(clip) and not await console.is_dead(clip)


# ------------------------------------------------------------------------------ 6. no JavaScript


async def test_the_console_works_with_javascript_disabled(console_factory, new_context):
    console = await console_factory(embed=20)
    clip = (await console.unembedded_ids())[0]
    await console.dead_letter(clip, "openai: 400 input too long")
    title = await console.title(clip)
    context = await new_context(java_script_enabled=False)
    page = await context.new_page()

    await sign_in(page, console)
    model = console.cfg.model
    assert await figure(page, "#coverage dd[data-k=embedded]") == await console.scalar(
        COUNT_EMBEDDED, (model,)
    )
    assert await figure(page, "#coverage dd[data-k=live]") == 25
    assert await figure(page, "#backlog dd[data-k=dead]") == 1
    await expect(page.locator("section.charts svg")).to_have_count(4)  # server-drawn charts

    await page.get_by_role("link", name="Failures").click()
    await expect(page).to_have_url(console.base + "/admin/failures")
    row = page.locator("tbody tr", has_text=title)
    await expect(row).to_contain_text("openai: 400 input too long")
    # Plain forms: retry and confirm without a line of script.
    await row.get_by_role("button", name="Retry").click()
    await expect(page.get_by_role("heading", name="Retry 1 clip?")).to_be_visible()
    await page.get_by_role("button", name="Yes, retry").click()
    await expect(page.get_by_role("status")).to_have_text("1 clip put back on the queue.")
    assert await console.is_queued(clip) and not await console.is_dead(clip)


# ------------------------------------------------------------------------------ 7. escaping


async def test_hostile_titles_and_errors_are_shown_as_text(console_factory, new_context):
    records = [clip_record(i) for i in range(4)] + [clip_record(99, title=HOSTILE)]
    console = await console_factory(records, embed=0)
    clip = str(await console.scalar("SELECT id FROM clips WHERE twitch_clip_id = %s", ("Clip99",)))
    await console.dead_letter(clip, HOSTILE_ERROR)
    # The Content-Security-Policy would block inline scripts even if the markup were not
    # escaped; bypassing it makes window.__pwned a test of the escaping itself.
    context = await new_context(bypass_csp=True)
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await sign_in(page, console, "/admin/failures")

    row = page.locator("tbody tr", has_text="window.__pwned=1")
    await expect(row.locator("td").nth(1)).to_have_text(HOSTILE)
    await expect(row.locator("td.reason")).to_have_text(HOSTILE_ERROR)
    checkbox = row.locator("input[type=checkbox]")
    assert await checkbox.get_attribute("aria-label") == f"select {HOSTILE}"
    assert await checkbox.get_attribute("value") == clip
    await expect(page.locator("main script, main img, #boom")).to_have_count(0)
    html = await page.content()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert await page.evaluate("window.__pwned") is None

    await page.get_by_role("link", name="Overview").click()
    await expect(page).to_have_url(console.base + "/admin")
    errors = page.locator("section", has=page.get_by_role("heading", name="Last errors"))
    last = errors.locator("tbody tr", has_text="window.__pwned=1")
    await expect(last.locator("td").nth(1)).to_have_text(HOSTILE)
    await expect(last.locator("td.reason")).to_have_text(HOSTILE_ERROR)
    await expect(page.locator("main script, main img, #boom")).to_have_count(0)
    assert await page.evaluate("window.__pwned") is None

    # The search page reflects the query into the page: as text, too.
    await page.goto(f"{console.base}/admin/search?mode=keyword&q={quote(HOSTILE)}")
    await expect(page.get_by_label("query")).to_have_value(HOSTILE)
    await expect(page.locator("main script, main img")).to_have_count(0)
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == []


# ------------------------------------------------------------------------------ 8. screenshots

TITLES = [
    "insane 1v4 clutch on Ascent",
    "ace with the sheriff, no scope",
    "the worst defuse attempt ever",
    "chat picks my loadout",
    "clutch ninja defuse with 0.2 s left",
    "streamer rages at the timer",
    "perfect smoke lineup for B site",
    "knife kill to end the half",
    "clutch or kick: 1v3 retake",
    "when the jett dash goes wrong",
    "400 IQ flank through mid",
    "we found the secret room",
    "speedrun any% in 14 minutes",
    "the cat walks over the keyboard",
    "triple collateral with the operator",
    "mod bans the streamer by mistake",
    "clutch save at match point",
    "full team wipe with one ultimate",
    "donation text-to-speech goes wild",
    "first ranked win of the season",
    "the boss fight nobody expected",
    "lag spike costs the round",
    "five stack voice comms highlights",
    "clutch pistol round 1v2",
    "reaction to the patch notes",
]


async def test_screenshots_for_the_docs(console_factory, new_context, screenshot):
    records = [
        clip_record(
            i, title=t, broadcaster_name=["tenz", "shroud", "kyedae", "tarik", "fns"][i % 5]
        )
        for i, t in enumerate(TITLES)
    ]
    console = await console_factory(records, embed=20)
    embedded, unembedded = await console.embedded_ids(), await console.unembedded_ids()
    await console.rows(
        "UPDATE clips SET is_removed = true WHERE id = ANY(%s::uuid[])",
        ([embedded[-1], unembedded[-1]],),
    )
    errors = [
        "openai: 400 Bad Request: this model's maximum context length is 8192 tokens",
        "openai: 500 Internal Server Error (5 attempts)",
    ]
    for clip, error in zip(unembedded[:2], errors, strict=True):
        await console.dead_letter(clip, error)
    context = await new_context(viewport=VIEWPORT)
    page = await context.new_page()
    shots: list[Path] = []

    await page.goto(console.base + "/admin")
    await expect(page.get_by_label("Admin token")).to_be_visible()
    shots.append(await screenshot(page, "admin-login"))
    await page.get_by_label("Admin token").fill(console.token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#backlog dd[data-k=dead]")).to_have_text("2")
    shots.append(await screenshot(page, "admin-overview"))

    await page.get_by_role("link", name="Failures").click()
    await expect(page.locator("tbody tr")).to_have_count(2)
    shots.append(await screenshot(page, "admin-failures"))

    # A worker drains the queue, then runs: its report loop writes the heartbeat row
    # (drain() alone processes the queue but never beats).
    async with runtime.open_runtime(console.cfg) as rt:
        w = worker.Worker(rt, name="worker-1")
        await w.drain()
        stop = asyncio.Event()
        running = asyncio.create_task(w.run(stop))
        try:
            await wait_for(
                lambda: console.scalar(
                    "SELECT count(*) FROM clipembed_workers WHERE stopped_at IS NULL"
                ),
                timeout=15,
                what="the worker's heartbeat row",
            )
            await page.get_by_role("link", name="Workers").click()
            await expect(page.locator("tbody tr")).to_have_count(1)
            await expect(page.locator("tbody tr .badge")).to_have_text("running")
            await expect(page.locator("tbody tr")).to_contain_text("worker-1")
            shots.append(await screenshot(page, "admin-workers"))
        finally:
            stop.set()
            await running

    await page.get_by_role("link", name="Search").click()
    await page.get_by_label("query").fill("clutch")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"/admin/search\?q=clutch"))
    await expect(page.locator("tbody tr").first).to_contain_text("clutch")
    shots.append(await screenshot(page, "admin-search"))

    assert [p.name for p in shots] == [
        f"admin-{n}.png" for n in ("login", "overview", "failures", "workers", "search")
    ]
    for shot in shots:
        data = await asyncio.to_thread(shot.read_bytes)
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), shot
        assert int.from_bytes(data[16:20], "big") == VIEWPORT["width"], shot  # IHDR width
        assert shot.parent.name == "img" and shot.parent.parent.name == "docs"
