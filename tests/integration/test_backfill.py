"""backfill.run on a real database through the fake provider over HTTP and a real Redis."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from clipembed import clips, runtime
from clipembed.bulk import adaptive_pace, backfill, pipeline, progress
from clipembed.db import connection
from clipembed.testing.fakeopenai import expected_vector
from tests.plugins.jobs import clip_record, load_clips

MODEL = "text-embedding-3-small"


def stored(database_url):
    with psycopg.connect(database_url) as conn:
        register_vector(conn)
        return conn.execute(
            "SELECT twitch_clip_id, title, broadcaster_name, creator_name, game_name, embedding,"
            " embedding_model, embedding_content_hash FROM clips ORDER BY twitch_clip_id"
        ).fetchall()


def assert_correct(row):
    tid, title, broadcaster, creator, game, embedding, model, digest = row
    text = clips.embedding_text(clips.ClipText(title, broadcaster, creator, game))
    assert embedding is not None, tid
    np.testing.assert_allclose(embedding.to_numpy(), expected_vector(text, 768), atol=1e-6)
    assert model == MODEL and bytes(digest) == clips.content_hash(text, MODEL, 768)


def execute(database_url, sql, params=()):
    with psycopg.connect(database_url) as conn:
        conn.execute(sql, params)


async def test_embeds_missing_skips_current_and_redoes_stale(
    jobs_runtime, database_url, fake_openai, tmp_path
):
    await load_clips(database_url, [clip_record(i) for i in range(30)], tmp_path)
    first = await backfill.run(jobs_runtime, batch_size=7, concurrency=3)
    assert (first.total, first.processed, first.skipped, first.failed) == (30, 30, 0, 0)
    assert first.embedding.requests == 5 and fake_openai.stats()["inputs"] == 30
    for row in stored(database_url):
        assert_correct(row)

    again = await backfill.run(jobs_runtime)
    assert (again.processed, again.skipped, again.embedding.requests) == (0, 30, 0)

    # a text edit, another model's vector (its hash differs), a lost vector and a removed clip
    # (the vectors live in the default space's table; clips.embedding mirrors it)
    execute(database_url, "UPDATE clips SET title = 'new title' WHERE twitch_clip_id = 'Clip1'")
    execute(
        database_url,
        "UPDATE embeddings_space_1 e SET model = 'old', content_hash = 'other' FROM clips c "
        "WHERE c.id = e.clip_id AND c.twitch_clip_id = 'Clip2'",
    )
    execute(
        database_url,
        "DELETE FROM embeddings_space_1 e USING clips c "
        "WHERE c.id = e.clip_id AND c.twitch_clip_id = 'Clip3'",
    )
    execute(
        database_url,
        "UPDATE clips SET is_removed = true, embedding = NULL WHERE twitch_clip_id = 'Clip4'",
    )
    stale = await backfill.run(jobs_runtime)
    assert (stale.total, stale.processed, stale.skipped) == (29, 3, 26)
    rows = {r[0]: r for r in stored(database_url)}
    assert rows["Clip1"][1] == "new title"
    for tid in ("Clip1", "Clip2", "Clip3"):
        assert_correct(rows[tid])
    assert rows["Clip4"][5] is None  # removed clips are never embedded


async def test_force_re_embeds_everything_from_the_cache(jobs_runtime, database_url, tmp_path):
    await load_clips(database_url, [clip_record(i) for i in range(12)], tmp_path)
    await backfill.run(jobs_runtime)
    forced = await backfill.run(jobs_runtime, force=True)
    assert (
        forced.processed == 12
        and forced.embedding.requests == 0
        and forced.embedding.cache_hit_rate == 1.0
    )


async def test_limit_caps_the_work_and_the_next_run_continues(jobs_runtime, database_url, tmp_path):
    await load_clips(database_url, [clip_record(i) for i in range(25)], tmp_path)
    part = await backfill.run(jobs_runtime, limit=10, batch_size=4)
    assert part.processed == 10
    rest = await backfill.run(jobs_runtime)
    assert rest.processed == 15 and rest.skipped == 10


async def test_dry_run_sends_nothing_writes_nothing_and_estimates(
    openai_settings, database_url, fake_openai, tmp_path
):
    from clipembed import runtime

    await load_clips(database_url, [clip_record(i) for i in range(40)], tmp_path)
    cfg = openai_settings(
        database_url=database_url,
        embedding_requests_per_minute=2,
        embedding_tokens_per_minute=10**9,
        embedding_price_per_million_tokens=0.02,
    )
    async with runtime.open_runtime(cfg) as rt:
        s = await backfill.run(rt, dry_run=True)
        assert s.dry_run and s.would_embed == 40 and s.processed == 0
        assert s.embedding.tokens > 0 and s.estimated_cost_usd == pytest.approx(
            s.embedding.tokens * 0.02 / 1e6
        )
        # 40 clips in one batch of 50, one request, at 2 requests/minute: 30 s
        assert s.embedding.requests == 1 and s.estimated_seconds == pytest.approx(30.0)
        small = await backfill.run(rt, dry_run=True, batch_size=10, limit=25)
        assert small.would_embed == 25 and small.embedding.requests == 3  # batches of 10, 10, 5
        assert small.estimated_seconds == pytest.approx(90.0)
        assert fake_openai.stats()["requests"] == 0
        assert all(r[5] is None for r in stored(database_url))
        # once embedded, a forced re-embed is served by the cache: no request, no cost
        await rt.require_service().embed([p for p in await texts(rt)])
        sent = fake_openai.stats()["requests"]
        forced = await backfill.run(rt, dry_run=True, force=True)
        assert forced.would_embed == 40 and forced.embedding.cache_hits == 40
        assert (
            forced.embedding.requests == 0
            and forced.embedding.tokens == 0
            and forced.estimated_cost_usd == 0
        )
        assert fake_openai.stats()["requests"] == sent


async def texts(rt):
    return [
        p.text
        async for p in pipeline.scan(
            rt.pool, space=rt.require_space(), model=MODEL, dimensions=768, force=True
        )
    ]


async def test_a_clip_edited_while_in_flight_keeps_no_stale_vector(
    jobs_runtime, database_url, tmp_path
):
    await load_clips(database_url, [clip_record(1)], tmp_path)
    space = jobs_runtime.require_space()
    (item,) = [
        p async for p in pipeline.scan(jobs_runtime.pool, space=space, model=MODEL, dimensions=768)
    ]
    vector = expected_vector(item.text, 768)
    execute(database_url, "UPDATE clips SET title = 'edited meanwhile'")
    written = await pipeline.write_batch(
        jobs_runtime.pool, [item], [vector], space=space, model=MODEL, dimensions=768
    )
    assert written == 0
    assert stored(database_url)[0][5] is None
    # the next run embeds the new text
    s = await backfill.run(jobs_runtime)
    assert s.processed == 1
    assert_correct(stored(database_url)[0])


class StopAfter(progress.Progress):
    """Sets the stop event after ``n`` clips, as Ctrl-C would."""

    def __init__(self, stop: asyncio.Event, n: int) -> None:
        super().__init__("test", terminal=False)
        self.stop_event, self.n = stop, n

    def advance(self, n: int, **counts: int) -> None:
        super().advance(n, **counts)
        if self.done >= self.n:
            self.stop_event.set()


async def test_stop_finishes_in_flight_batches_and_a_rerun_embeds_each_text_once(
    jobs_runtime, database_url, fake_openai, tmp_path
):
    await load_clips(database_url, [clip_record(i) for i in range(200)], tmp_path)
    stop = asyncio.Event()
    first = await backfill.run(
        jobs_runtime, batch_size=10, concurrency=2, stop=stop, progress=StopAfter(stop, 30)
    )
    assert first.interrupted and 30 <= first.processed < 200 and first.failed == 0
    assert backfill.exit_code(first) == 1
    with psycopg.connect(database_url) as conn:
        (done,) = conn.execute("SELECT count(embedding) FROM clips").fetchone()
    assert done == first.processed  # everything embedded was written

    rest = await backfill.run(jobs_runtime, batch_size=10)
    assert rest.processed == 200 - first.processed and not rest.interrupted
    assert (
        rest.skipped == first.processed and rest.embedding.cache_hits == 0
    )  # not even from the cache
    server = fake_openai.stats()
    assert server["texts_embedded"] == 200 and server["embedded_more_than_once"] == 0
    for row in stored(database_url):
        assert_correct(row)


async def test_provider_failures_are_counted_and_left_for_the_next_run(
    jobs_runtime, database_url, fake_openai, tmp_path
):
    await load_clips(database_url, [clip_record(i) for i in range(20)], tmp_path)
    fake_openai.control(fail_rate_500=1.0)
    failed = await backfill.run(jobs_runtime, batch_size=10)
    assert failed.failed == 20 and failed.processed == 0 and failed.last_error
    assert backfill.exit_code(failed) == 1
    assert all(r[5] is None for r in stored(database_url))
    fake_openai.control(fail_rate_500=0.0, plan=["wrong_dims", "ok", "ok"])
    healed = await backfill.run(jobs_runtime, batch_size=10)
    assert healed.processed + healed.failed == 20
    final = await backfill.run(jobs_runtime, batch_size=10)
    assert final.failed == 0
    for row in stored(database_url):
        assert_correct(row)


SPACE_INDEX = "embeddings_space_1_hnsw"  # the default space's HNSW index (migration 0009)


def index_exists(database_url):
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SPACE_INDEX,)).fetchone()[0]


async def test_index_rebuild_drops_and_rebuilds_even_when_interrupted(
    jobs_runtime, database_url, tmp_path
):
    await load_clips(database_url, [clip_record(i) for i in range(60)], tmp_path)
    stop = asyncio.Event()
    s = await backfill.run(
        jobs_runtime, index="rebuild", batch_size=10, stop=stop, progress=StopAfter(stop, 10)
    )
    assert s.interrupted and s.index_rebuilt and index_exists(database_url)
    kept = await backfill.run(jobs_runtime)  # few clips: auto keeps the index in place
    assert not kept.index_rebuilt and index_exists(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT clip_id FROM embeddings_space_1 "
                "ORDER BY embedding <=> (SELECT embedding FROM embeddings_space_1 LIMIT 1) LIMIT 5"
            ).fetchall()
        )
    assert SPACE_INDEX in plan


async def test_a_rebuild_with_nothing_to_embed_keeps_the_old_index_through_the_pass(
    jobs_runtime, database_url, tmp_path, monkeypatch
):
    """``--index rebuild`` on a space with every clip embedded: search keeps the old index for
    the whole pass over the clips (minutes at a million), and loses it only for the build."""
    await load_clips(database_url, [clip_record(i) for i in range(30)], tmp_path)
    await backfill.run(jobs_runtime)
    real_scan = backfill.pipeline.scan
    after_pass: list[bool] = []

    async def scan(*args, **kwargs):
        async for item in real_scan(*args, **kwargs):
            yield item
        after_pass.append(index_exists(database_url))

    monkeypatch.setattr(backfill.pipeline, "scan", scan)
    s = await backfill.run(jobs_runtime, index="rebuild")
    assert after_pass == [True]
    assert s.index_rebuilt and s.processed == 0 and index_exists(database_url)


async def test_the_probe_drops_the_index_mid_load_and_builds_it_at_the_end(
    openai_settings, database_url, tmp_path, monkeypatch
):
    """The ``auto`` policy's wiring: a large, empty space under a request limit below
    INCREMENTAL_INDEX_RATE starts with the index kept and probed; when the probe's estimate says
    dropping is sooner (made certain here: a free build, any saving enough) the index is dropped
    during the load, every clip is still embedded, and the index is built once at the end."""
    monkeypatch.setattr(backfill.index_policy, "PROBE_BATCHES", 1)
    monkeypatch.setattr(backfill.index_policy, "PROBE_SECONDS", 0.0)
    monkeypatch.setattr(backfill.index_policy, "DROP_MARGIN", -1.0)
    monkeypatch.setattr(backfill.index_policy, "BUILD_DIMENSION_ROWS_PER_S", 1e18)
    await load_clips(database_url, [clip_record(i) for i in range(3000)], tmp_path)
    cfg = openai_settings(database_url=database_url, embedding_requests_per_minute=5_000)
    async with runtime.open_runtime(cfg) as rt:
        summary = await backfill.run(rt, batch_size=10, concurrency=2)
    assert summary.processed == 3000 and summary.failed == 0
    assert summary.index_rebuilt and "drop the index" in summary.index_policy
    assert "the limit allows 833" in summary.index_policy
    assert index_exists(database_url)
    for row in stored(database_url):
        assert_correct(row)


async def test_the_index_is_built_with_the_configured_graph_parameters(
    openai_settings, database_url, tmp_path
):
    """CLIPEMBED_HNSW_M and _EF_CONSTRUCTION reach the index a rebuild creates (pgvector keeps
    them in the index's options, where later inserts read them too)."""
    await load_clips(database_url, [clip_record(i) for i in range(30)], tmp_path)
    cfg = openai_settings(
        database_url=database_url, clipembed_hnsw_m=8, clipembed_hnsw_ef_construction=40
    )
    async with runtime.open_runtime(cfg) as rt:
        summary = await backfill.run(rt, index="rebuild", batch_size=10)
    assert summary.index_rebuilt and summary.processed == 30
    with psycopg.connect(database_url) as conn:
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = %s", (SPACE_INDEX,)
        ).fetchone()
    assert options is not None and sorted(options[0]) == ["ef_construction=40", "m=8"]


async def test_a_failing_embedder_stops_the_run_and_the_index_is_built_after_every_writer(
    jobs_runtime, database_url, tmp_path, monkeypatch
):
    """A consumer raising mid-run (a bug, not a provider error) ends the whole run promptly:
    the reader and the other embedders are cancelled and awaited, every batch is written whole
    or not at all, and the index rebuild starts only once no writer is running."""
    await load_clips(database_url, [clip_record(i) for i in range(80)], tmp_path)
    svc = jobs_runtime.require_service()
    real_embed = svc.embed_detailed
    real_write = pipeline.write_batch
    real_rebuild = backfill.index_policy.rebuild_index
    calls = 0
    writers_running = 0
    events: list[str] = []
    release = asyncio.Event()

    async def embed_detailed(texts):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("embedder bug")
        if calls > 3:
            await release.wait()  # the siblings are mid-request when the failure happens
        return await real_embed(texts)

    async def write_batch(*args, **kwargs):
        nonlocal writers_running
        writers_running += 1
        try:
            return await real_write(*args, **kwargs)
        finally:
            writers_running -= 1
            events.append("write")

    async def rebuild_index(pool, space, **kwargs):
        events.append(f"rebuild with {writers_running} writers running")
        await real_rebuild(pool, space, **kwargs)

    monkeypatch.setattr(svc, "embed_detailed", embed_detailed)
    monkeypatch.setattr(pipeline, "write_batch", write_batch)
    monkeypatch.setattr(backfill.index_policy, "rebuild_index", rebuild_index)

    with pytest.raises(RuntimeError, match="embedder bug"):
        await asyncio.wait_for(
            backfill.run(jobs_runtime, index="rebuild", batch_size=10, concurrency=2), 30
        )
    assert not release.is_set()  # nobody had to unblock the siblings: they were cancelled
    assert events[-1] == "rebuild with 0 writers running"
    assert index_exists(database_url)
    rows = stored(database_url)
    embedded = [r for r in rows if r[5] is not None]
    for row in embedded:
        assert_correct(row)
    # batches are written whole: 10 clips each, in one transaction
    assert len(embedded) % 10 == 0 and len(embedded) <= 20


async def test_max_rate_paces_the_backfill(jobs_runtime, database_url, tmp_path):
    """--max-rate / CLIPEMBED_BACKFILL_MAX_RATE (issue 18): batches wait for the pace; every
    clip is still embedded. (How long it took is a benchmark's business; that the pace held
    the backfill back is recorded in its summary.)"""
    await load_clips(database_url, [clip_record(i) for i in range(30)], tmp_path)
    summary = await backfill.run(jobs_runtime, batch_size=5, concurrency=2, max_rate=100)
    assert summary.processed == 30 and summary.failed == 0
    assert summary.paced_seconds > 0  # six batches of 5 at 100 clips/s: 0.25 s of waiting
    for row in stored(database_url):
        assert_correct(row)


async def test_a_suffering_search_slows_the_backfill(
    jobs_runtime, database_url, tmp_path, monkeypatch
):
    """The adaptive pace (issue 18): while a search statement runs past the target (here one
    that sleeps, as a search stuck behind bulk work looks to the database), the backfill halves
    its pace; the change is an event the console shows; every clip is still embedded."""
    await load_clips(database_url, [clip_record(i) for i in range(30)], tmp_path)
    monkeypatch.setattr(adaptive_pace, "WINDOW_SECONDS", 0.3)
    search = await psycopg.AsyncConnection.connect(
        database_url, application_name=connection.SEARCH_APPLICATION, autocommit=True
    )
    async with search:
        stuck = asyncio.create_task(search.execute("SELECT pg_sleep(3)"))
        deadline = asyncio.get_running_loop().time() + 30
        while await adaptive_pace.search_strain_ms(jobs_runtime.pool) <= 0:
            assert asyncio.get_running_loop().time() < deadline, "the search never showed"
            await asyncio.sleep(0.02)
        summary = await backfill.run(jobs_runtime, batch_size=5, concurrency=1, max_rate=60)
        await stuck
    assert summary.processed == 30 and summary.failed == 0
    assert summary.pace_changes >= 1 and summary.slowest_pace is not None
    assert summary.slowest_pace < 60
    with psycopg.connect(database_url) as conn:
        detail = conn.execute(
            "SELECT detail FROM clipembed_events WHERE kind = 'bulk_pace' ORDER BY at LIMIT 1"
        ).fetchone()[0]
    assert 0 < detail["rate"] < 60 and detail["search_ms"] > detail["target_ms"] == 200
    assert detail["by"] == "backfill"
    for row in stored(database_url):
        assert_correct(row)


async def test_the_index_build_runs_at_low_priority_on_a_connection_of_its_own(
    jobs_runtime, database_url, monkeypatch
):
    """Where the database runs on this machine (here: the test's own server, over its Unix
    socket), the build's backend is reniced (issue 18: the one bulk statement no pace can
    slow); the backends of the pool keep their priority, and the build's goes away with it."""
    seen: list[tuple[int, int]] = []
    real = backfill.index_policy.lower_priority

    def lower_priority(info, nice=backfill.index_policy.BUILD_NICE):
        done = real(info, nice)
        seen.append((info.backend_pid, os.getpriority(os.PRIO_PROCESS, info.backend_pid)))
        return done

    monkeypatch.setattr(backfill.index_policy, "lower_priority", lower_priority)
    space = jobs_runtime.space
    await backfill.index_policy.drop_index(jobs_runtime.pool, space)
    await backfill.index_policy.rebuild_index(jobs_runtime.pool, space, workers=0)
    assert index_exists(database_url)
    [(pid, nice)] = seen
    assert nice == backfill.index_policy.BUILD_NICE
    async with jobs_runtime.pool.connection() as conn:
        pooled = conn.info.backend_pid
    assert pooled != pid and os.getpriority(os.PRIO_PROCESS, pooled) == 0
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # the backend ends with its connection
        async with jobs_runtime.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if (await cur.fetchone())[0] == 0:
                break
        assert asyncio.get_running_loop().time() < deadline, "the build's backend stayed"
        await asyncio.sleep(0.05)


async def test_bulk_work_s_sessions_run_at_the_bulk_nice(openai_settings, database_url):
    """Bulk work's pool (``open_runtime(bulk=True)``): every session's backend on this machine
    runs at CLIPEMBED_BULK_NICE, also one the pool opens later; other pools keep priority 0."""
    from clipembed import runtime

    cfg = openai_settings(database_url=database_url, clipembed_bulk_nice=7)
    async with runtime.open_runtime(cfg, with_service=False, bulk=True) as rt:
        async with rt.pool.connection() as a, rt.pool.connection() as b:
            pids = [a.info.backend_pid, b.info.backend_pid]
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [7, 7]
    async with runtime.open_runtime(cfg, with_service=False) as rt, rt.pool.connection() as c:
        assert os.getpriority(os.PRIO_PROCESS, c.info.backend_pid) == 0
    off = openai_settings(database_url=database_url, clipembed_bulk_nice=0)
    async with (
        runtime.open_runtime(off, with_service=False, bulk=True) as rt,
        rt.pool.connection() as c,
    ):
        assert os.getpriority(os.PRIO_PROCESS, c.info.backend_pid) == 0


def test_a_bulk_command_lowers_its_own_priority_never_raises_it():
    """In a process of its own (a nice value cannot be raised back without privileges)."""
    import subprocess
    import sys

    code = (
        "import os\n"
        "from clipembed.db import priority\n"
        "print(priority.lower_own_priority(0), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "print(priority.lower_own_priority(10), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "print(priority.lower_own_priority(5), os.getpriority(os.PRIO_PROCESS, 0))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split("\n")[:3] == ["False 0", "True 10", "True 10"]


def test_a_server_elsewhere_is_never_reniced():
    """Only a Unix socket or loopback host, and only a pid that is a postgres process here."""
    import types

    from clipembed.bulk import index_policy

    me = os.getpid()  # a local process that is not postgres
    for host in ("db.example.com", "10.0.0.5", "/tmp", "127.0.0.1"):
        info = types.SimpleNamespace(host=host, backend_pid=me)
        assert index_policy.lower_priority(info) is False  # type: ignore[arg-type]
    assert os.getpriority(os.PRIO_PROCESS, me) == 0
