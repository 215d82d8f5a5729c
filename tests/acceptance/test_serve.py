"""`clipembed serve` as a user runs it: health, the scheduler in the lifespan, graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import psycopg

from clipembed.testing import servers
from tests.acceptance.conftest import CLIPEMBED
from tests.plugins.provider import TEST_KEY
from tests.plugins.queue import insert_clips


def all_embedded(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            if (
                conn.execute("SELECT count(*) FROM clips WHERE embedding IS NULL").fetchone()[0]
                == 0
            ):
                return True
        time.sleep(0.2)
    return False


def test_serve_runs_scheduler_and_worker_and_stops_cleanly(cli_env):
    url = cli_env["DATABASE_URL"]
    insert_clips(url, 12)  # created now: inside the scheduler's window
    port = servers.free_port()
    env = dict(
        cli_env,
        EMBEDDING_ENABLED="true",
        CLIPEMBED_SERVE_WORKER="true",
        CLIPEMBED_QUEUE_POLL_SECONDS="0.5",
    )
    proc = subprocess.Popen(
        [*CLIPEMBED, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health and health["ok"] and health["redis"]["ok"] and health["scheduler"]["enabled"]
        assert health["provider"] == {  # no URL for an anonymous caller (docs/security.md)
            "name": "openai",
            "model": "text-embedding-3-small",
            "dimensions": 768,
            "api_key_set": True,
        }
        while time.monotonic() < deadline:
            with psycopg.connect(url) as conn:
                if (
                    conn.execute("SELECT count(*) FROM clips WHERE embedding IS NULL").fetchone()[0]
                    == 0
                ):
                    break
            time.sleep(0.2)
        insert_clips(url, 3, prefix="live")  # the in-process worker picks these up
        while time.monotonic() < deadline:
            with psycopg.connect(url) as conn:
                if (
                    conn.execute("SELECT count(*) FROM clips WHERE embedding IS NULL").fetchone()[0]
                    == 0
                ):
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("clips were not embedded while serving")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert TEST_KEY not in out + err
