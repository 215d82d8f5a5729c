"""The HTTP app's own parts over real sockets: health, metrics, the scheduler's lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import httpx
import psycopg
import pytest
import uvicorn

from clipembed.api import app as app_mod
from clipembed.testing import servers
from tests.plugins.admin import admin_token, bearer
from tests.plugins.jobs import clip_record, load_clips
from tests.plugins.provider import TEST_KEY


class Served:
    """uvicorn serving create_app(cfg) on a thread; stop() is the graceful shutdown."""

    def __init__(self, cfg) -> None:
        self.app = app_mod.create_app(cfg)
        self.port = servers.free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "shutdown hung"


def count_embedded(database_url) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(embedding) FROM clips").fetchone()[0]


def test_healthz_reports_database_redis_and_provider_without_secrets(
    openai_settings, database_url, fake_openai
):
    cfg = openai_settings(database_url=database_url)
    with Served(cfg) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        body = r.json()
        assert body["ok"] is True and body["database"] == {"ok": True}
        assert body["redis"] == {"ok": True}
        assert body["provider"]["name"] == "openai"
        assert body["provider"]["model"] == "text-embedding-3-small"
        assert body["provider"]["dimensions"] == 768
        assert body["provider"]["api_key_set"] is True
        assert body["scheduler"] == {"enabled": False}
        assert TEST_KEY not in r.text and "SECRET" not in r.text


def test_healthz_degrades_when_redis_is_gone_and_redacts_url_credentials(
    openai_settings, database_url, fake_openai, redis_process
):
    with_userinfo = fake_openai.base_url.replace("http://", "http://user:hunter2@")
    cfg = openai_settings(
        database_url=database_url,
        redis_url=redis_process.url,
        embedding_api_base_url=with_userinfo,
    )
    with Served(cfg) as client:
        assert client.get("/healthz").json()["redis"]["ok"] is True
        redis_process.stop()
        r = client.get("/healthz")
        assert r.status_code == 200  # still serving: search works uncached
        assert r.json()["redis"]["ok"] is False
        # anonymous callers see no URL at all; an admin sees it without its credentials
        assert "base_url" not in r.json()["provider"] and "://" not in r.text
        admin = client.get("/healthz", headers=bearer(admin_token(database_url)))
        assert "hunter2" not in admin.text and "***@127.0.0.1" in admin.text


def test_metrics_are_prometheus_text(openai_settings, database_url):
    with Served(openai_settings(database_url=database_url)) as client:
        assert client.get("/metrics").status_code == 401
        r = client.get("/metrics", headers=bearer(admin_token(database_url)))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "# TYPE" in r.text


def test_scheduler_runs_in_the_lifespan_and_shutdown_waits_for_it(
    openai_settings, database_url, tmp_path
):
    recent = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    asyncio.run(
        load_clips(database_url, [clip_record(i, created_at=recent) for i in range(5)], tmp_path)
    )
    cfg = openai_settings(
        database_url=database_url,
        embedding_enabled=True,
        embedding_scheduler_interval_minutes=60,
    )
    served = Served(cfg)
    with served as client:
        assert client.get("/healthz").json()["scheduler"] == {"enabled": True}
        deadline = time.monotonic() + 30
        while count_embedded(database_url) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count_embedded(database_url) == 5  # the cycle at start
    # graceful: the lifespan finished (scheduler task awaited, pool closed) within the join


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (None, None),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://u:p@api.example.com/v1", "https://***@api.example.com/v1"),
        ("https://key@api.example.com:8443/v1", "https://***@api.example.com:8443/v1"),
    ],
)
def test_redact(url, shown):
    assert app_mod._redact(url) == shown
