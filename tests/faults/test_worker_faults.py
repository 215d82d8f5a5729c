"""Workers under faults: SIGKILL, PostgreSQL restart, Redis loss, provider errors, scale-out."""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
import pytest

from clipembed.realtime import queue, worker
from tests.faults.conftest import (
    check,
    edit_some,
    install_audit,
    pg_ctl,
    start_private_postgres,
    stop_worker,
    wait_until_embedded,
)
from tests.plugins.queue import insert_clips
from tests.plugins.waiting import wait_until

pytestmark = pytest.mark.slow

# How long a worker may take to LISTEN again once PostgreSQL accepts connections: an attempt
# that began before the restart finished may hang until its connect timeout, the worker then
# pauses RECONNECT_DELAY, and the next attempt ends within the timeout too (PGCONNECT_TIMEOUT
# is given to the workers so that the bound is ours, not psycopg's 130 s default).
CONNECT_TIMEOUT = 15  # seconds
RELISTEN_WITHIN = CONNECT_TIMEOUT + worker.RECONNECT_DELAY + CONNECT_TIMEOUT  # seconds
# A lease outlives the longest a worker may take to be back after a restart (reconnect and
# LISTEN, then complete or extend): a lapsed lease, not the restart, is what re-embeds, and a
# 20 s lease lapsed under a loaded machine (a text embedded twice in a run with a parallel
# CPU load) although the worker was within RELISTEN_WITHIN.
RESTART_LEASE = RELISTEN_WITHIN + CONNECT_TIMEOUT  # seconds
STARTUP = 60  # seconds for a new worker process to import, connect, check the schema, LISTEN
# The longest a working backlog may go without shrinking: an item retried after a transient
# error waits up to the queue's longest transient backoff, and a killed worker's items wait for
# their lease (20 s at most here) to lapse. Longer means the work stopped, however busy the
# machine (wait_until_embedded has no deadline on the whole).
STALL = queue.TRANSIENT_BACKOFF_MAX + 20 + worker.RECONNECT_DELAY  # seconds


def assert_clean(report: dict[str, int]) -> None:
    assert report["lost"] == 0 and report["wrong"] == 0 and report["duplicated"] == 0, report


def test_sigkill_mid_batch_leases_are_taken_over(
    database_url, worker_env, spawn_worker, fake_openai
):
    install_audit(database_url)
    insert_clips(database_url, 200)
    fake_openai.control(latency_ms=300)
    env = worker_env(database_url)
    victim, survivor = spawn_worker(env), spawn_worker(env)
    wait_until(
        lambda: fake_openai.stats()["requests"] >= 3,
        timeout=STARTUP,  # the workers start (import, connect, LISTEN), then claim and send
        what="the workers' first 3 requests (batches in flight)",
    )
    victim.send_signal(
        signal.SIGKILL
    )  # mid-batch: its leased items are stranded until the lease ends
    victim.communicate()
    insert_clips(database_url, 40, prefix="after-kill")
    edit_some(database_url, 20, "edited")
    fake_openai.control(latency_ms=20)
    wait_until_embedded(database_url, stall=STALL)
    assert stop_worker(survivor)[0] == 0
    assert_clean(check(database_url, faults="SIGKILL 1 of 2 workers mid-batch"))


def test_postgres_restart_workers_reconnect(tmp_path, worker_env, spawn_worker, fake_openai):
    """Without Redis (no cache to hide a second request), so the provider's log shows that a
    batch embedded before the restart is completed after it, not embedded again."""
    server = start_private_postgres(tmp_path / "pg")
    try:
        url = server.get_uri("postgres")
        install_audit(url)
        insert_clips(url, 150)
        fake_openai.control(latency_ms=100)
        env = worker_env(
            url,
            REDIS_URL="none",
            CLIPEMBED_QUEUE_LEASE_SECONDS=str(int(RESTART_LEASE)),
            PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        )
        workers = [spawn_worker(named(env, i)) for i in range(2)]
        wait_until(
            lambda: fake_openai.stats()["requests"] >= 2,
            timeout=STARTUP,  # the workers start (import, connect, LISTEN), then claim and send
            what="the workers' first 2 requests",
        )
        restarts = 0
        for _ in range(2):
            pg_ctl(server, "-w", "-m", "fast", "restart")  # returns once it accepts connections
            back = time.monotonic()
            restarts += 1
            edit_some(url, 10, f"after restart {restarts}")
            insert_clips(url, 25, prefix=f"after-restart-{restarts}")
            # both workers reconnected before the next restart
            wait_listening(url, workers, until=back + RELISTEN_WITHIN)
        fake_openai.control(latency_ms=10)
        wait_until_embedded(url, stall=STALL)
        for w in workers:
            code, out, err = stop_worker(w)
            assert code == 0, err
            print(f"\nworker: {out.strip()}")
        report = check(url, faults=f"PostgreSQL restarted (fast) {restarts}x mid-run, no Redis")
        assert_clean(report)
        assert fake_openai.stats()["embedded_more_than_once"] == 0
    finally:
        server.cleanup()


def test_redis_stops_work_goes_on_uncached(
    database_url, worker_env, spawn_worker, redis_process, fake_openai
):
    install_audit(database_url)
    insert_clips(database_url, 150)
    fake_openai.control(latency_ms=100)
    workers = [
        spawn_worker(worker_env(database_url, REDIS_URL=redis_process.url)) for _ in range(2)
    ]
    wait_until(
        lambda: fake_openai.stats()["requests"] >= 2,
        timeout=STARTUP,  # the workers start (import, connect, LISTEN), then claim and send
        what="the workers' first 2 requests",
    )
    redis_process.stop()
    insert_clips(database_url, 50, prefix="no-redis")
    fake_openai.control(latency_ms=10)
    wait_until_embedded(database_url, stall=STALL)
    for w in workers:
        code, _, err = stop_worker(w)
        assert code == 0, err
        assert "Traceback" not in err
    assert_clean(check(database_url, faults="Redis stopped mid-run"))


def test_provider_500s_for_a_while_backlog_drains(
    database_url, worker_env, spawn_worker, fake_openai
):
    install_audit(database_url)
    fake_openai.control(fail_rate_500=0.5, seed=3)
    workers = [spawn_worker(worker_env(database_url)) for _ in range(2)]
    insert_clips(database_url, 200)
    wait_until(  # or fewer, if the workers got everything through first
        lambda: fake_openai.stats()["faults"].get("500", 0) >= 5 or queue_length(database_url) == 0,
        timeout=STARTUP,  # the workers start (import, connect, LISTEN), then claim and send
        interval=0.1,
        what="5 injected provider 500s (or the backlog drained)",
    )
    fake_openai.control(fail_rate_500=0.0)
    faults = fake_openai.stats()["faults"].get("500", 0)
    wait_until_embedded(database_url, stall=STALL)
    for w in workers:
        assert stop_worker(w)[0] == 0
    report = check(
        database_url, faults=f"provider 500 on half the requests for a while ({faults} errors)"
    )
    assert faults > 0
    assert_clean(report)


def queue_length(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0]


def named(env: dict[str, str], i: int) -> dict[str, str]:
    """``env`` for worker ``i``: its connections carry its name (see :func:`wait_listening`)."""
    return env | {"PGAPPNAME": f"fault-worker-{i}"}


def wait_listening(url: str, workers: list[subprocess.Popen[str]], *, until: float) -> None:
    """Until every worker (spawned with :func:`named` env) LISTENs on this database.

    Fails at once with its output when a worker has exited (it will never listen), and at the
    ``until`` deadline (``time.monotonic()``) with what PostgreSQL shows of each missing worker.
    """
    names = {f"fault-worker-{i}": p for i, p in enumerate(workers)}
    missing: dict[str, list[tuple]] = {}  # name -> its sessions, as last seen

    def all_listening() -> bool:
        for name, p in names.items():
            if p.poll() is not None:
                _, err = p.communicate()
                raise AssertionError(f"{name} exited ({p.returncode}) instead of listening: {err}")
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name, state, left(query, 40), backend_start "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = ANY(%s)",
                (list(names),),
            ).fetchall()
        listening = {r[0] for r in rows if r[2].upper().startswith("LISTEN")}
        missing.clear()
        missing.update({n: [r[1:] for r in rows if r[0] == n] for n in names if n not in listening})
        return not missing

    try:
        wait_until(
            all_listening,
            timeout=max(0.0, until - time.monotonic()),
            interval=0.1,
            what=f"{len(names)} workers to LISTEN",
        )
    except AssertionError as exc:
        if not missing:
            raise
        raise AssertionError(f"{exc}; not listening (their sessions): {missing}") from None


def test_one_or_four_workers_and_a_binding_provider_limit_lose_and_duplicate_nothing(
    database_factory, worker_env, spawn_worker, fake_openai
):
    """1 worker, 4 workers, then 4 workers under a 120 requests/min limit that binds them, with
    a slow provider (0.5 s per request, 5 clips each) so that batches overlap: every clip
    embedded once with the vector of its text, and the shared limit keeps the provider's 429s
    rare. (How throughput scales with workers is measured by a benchmark, not asserted here.)"""
    fake_openai.control(latency_ms=500)
    clips_per_run = 60
    env = {"CLIPEMBED_WORKER_BATCH_SIZE": "5", "CLIPEMBED_WORKER_CONCURRENCY": "1"}
    for n in (1, 4):
        url = database_factory.new()
        install_audit(url)
        workers = [spawn_worker(named(worker_env(url, **env), i)) for i in range(n)]
        wait_listening(url, workers, until=time.monotonic() + STARTUP)
        insert_clips(url, clips_per_run, prefix=f"scale{n}")
        wait_until_embedded(url, stall=STALL)
        for w in workers:
            assert stop_worker(w)[0] == 0
        assert_clean(check(url, faults=f"{n} workers, provider latency 0.5 s"))
    url = database_factory.new()
    install_audit(url)
    fake_openai.control(rpm=120)
    workers = [
        spawn_worker(named(worker_env(url, **env, EMBEDDING_REQUESTS_PER_MINUTE="120"), i))
        for i in range(4)
    ]
    wait_listening(url, workers, until=time.monotonic() + STARTUP)
    insert_clips(url, clips_per_run, prefix="limited")
    wait_until_embedded(url, stall=STALL)
    for w in workers:
        assert stop_worker(w)[0] == 0
    assert_clean(check(url, faults="4 workers under a 120 rpm limit"))
    assert fake_openai.stats()["by_status"].get("429", 0) <= 2
