"""Workers under faults: SIGKILL, PostgreSQL restart, Redis loss, provider errors, scale-out."""

from __future__ import annotations

import signal
import time

import pytest

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

pytestmark = pytest.mark.slow


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
    deadline = time.monotonic() + 30
    while fake_openai.stats()["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(
        signal.SIGKILL
    )  # mid-batch: its leased items are stranded until the lease ends
    victim.communicate()
    insert_clips(database_url, 40, prefix="after-kill")
    edit_some(database_url, 20, "edited")
    fake_openai.control(latency_ms=20)
    wait_until_embedded(database_url, timeout=60)
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
        # the lease outlives a restart: a lapsed lease (not the restart) is what re-embeds
        env = worker_env(url, REDIS_URL="none", CLIPEMBED_QUEUE_LEASE_SECONDS="20")
        workers = [spawn_worker(env) for _ in range(2)]
        while fake_openai.stats()["requests"] < 2:
            time.sleep(0.05)
        restarts = 0
        for _ in range(2):
            pg_ctl(server, "-w", "-m", "fast", "restart")
            restarts += 1
            edit_some(url, 10, f"after restart {restarts}")
            insert_clips(url, 25, prefix=f"after-restart-{restarts}")
            time.sleep(0.5)
        fake_openai.control(latency_ms=10)
        wait_until_embedded(url, timeout=60)
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
    while fake_openai.stats()["requests"] < 2:
        time.sleep(0.05)
    redis_process.stop()
    insert_clips(database_url, 50, prefix="no-redis")
    fake_openai.control(latency_ms=10)
    wait_until_embedded(database_url, timeout=60)
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
    time.sleep(3)
    fake_openai.control(fail_rate_500=0.0)
    faults = fake_openai.stats()["faults"].get("500", 0)
    wait_until_embedded(database_url, timeout=90)
    for w in workers:
        assert stop_worker(w)[0] == 0
    report = check(
        database_url, faults=f"provider 500 on half the requests for 3 s ({faults} errors)"
    )
    assert faults > 0
    assert_clean(report)


def test_four_workers_scale_until_the_provider_limit_binds(
    database_factory, worker_env, spawn_worker, fake_openai
):
    fake_openai.control(latency_ms=200)
    rates = {}
    for n in (1, 4):
        url = database_factory.new()
        install_audit(url)
        workers = [
            spawn_worker(worker_env(url, CLIPEMBED_WORKER_BATCH_SIZE="10")) for _ in range(n)
        ]
        time.sleep(1.5)  # let them start and LISTEN
        insert_clips(url, 200, prefix=f"scale{n}")
        seconds = wait_until_embedded(url, timeout=90)
        rates[n] = 200 / seconds
        for w in workers:
            assert stop_worker(w)[0] == 0
        assert_clean(check(url, faults=f"{n} workers, provider latency 200 ms"))
    # a request limit of 240/min (4 req/s = 40 clips/s at 10 per request) binds 4 workers
    url = database_factory.new()
    install_audit(url)
    fake_openai.control(rpm=240)
    workers = [
        spawn_worker(
            worker_env(url, CLIPEMBED_WORKER_BATCH_SIZE="10", EMBEDDING_REQUESTS_PER_MINUTE="240")
        )
        for _ in range(4)
    ]
    time.sleep(1.5)
    insert_clips(url, 120, prefix="limited")
    rates["4 limited"] = 120 / wait_until_embedded(url, timeout=90)
    for w in workers:
        assert stop_worker(w)[0] == 0
    assert_clean(check(url, faults="4 workers under a 240 rpm limit"))
    print(f"\nSCALE-OUT clips/s: {rates}")
    assert rates[4] > 2 * rates[1]
    assert rates["4 limited"] <= 40 * 1.15
    assert fake_openai.stats()["by_status"].get("429", 0) <= 2
