"""The HTTP API over real sockets: uvicorn serving the real app on a real database."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from clipembed import settings
from clipembed.api.app import create_app
from clipembed.testing import servers
from tests.plugins.admin import admin_token, bearer
from tests.plugins.search import load_search_clips

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def search_db(database_factory, local_provider):
    """One database for the module: no test here writes to what another reads (the admin
    token test_openapi_healthz_metrics creates is its own), and a fresh database, corpus and
    server per test were 0.8 s of each of its ~30 parametrized cases."""
    url = database_factory.new(dimensions=384)
    return url, load_search_clips(url, local_provider)


@pytest.fixture(scope="module")
def api(search_db, tmp_path_factory):
    url, ids = search_db
    tmp_path = tmp_path_factory.mktemp("api-home")
    cfg = settings.Settings(
        _env_file=None,
        embedding_provider="local",
        redis_url="none",
        database_url=url,
        clipembed_home=tmp_path,
        # the semantic branch must answer: a local model's encode on a loaded 2-core machine
        # can pass the product's 1 s deadline (the deadline is test_search_degraded's subject)
        search_embed_timeout_ms=60_000,
        # one server for the module: its tests together send more than one client's budget
        # (the budgets are test_security_search's subject)
        clipembed_search_requests_per_second=0,
        clipembed_search_embeds_per_minute=0,
    )
    port = servers.free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client, ids
    server.should_exit = True
    thread.join(15)


HOSTILE = [
    '"unbalanced quote',
    "it's",
    "a & b | !c",
    "clutch:*",
    "(clutch <-> ace)",
    "!!!",
    "&&&",
    "'; DROP TABLE clips;--",
    "1 OR 1=1",
    "\\x00",
    "🔥🔥🔥",
    "神プレイ",
    "레전드 클러치",
    "x" * 499,
    "<script>alert(1)</script>",
    "%00%27",
    "clutch\x00ace",
    "\u202eevil",
]


def test_search_returns_clips_with_score_rank_and_branches(api):
    client, _ = api
    r = client.get("/search", params={"q": "AWP headshot clutch", "limit": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    first = body["results"][0]
    assert first["title"] == "Insane AWP headshot clutch"
    assert first["rank"] == 1 and first["score"] > 0
    assert first["keyword"]["rank"] == 1 and first["semantic"]["rank"] >= 1
    r = client.get(
        "/search",
        params={"q": "clutch", "mode": "keyword", "game": "Counter-Strike", "from": "2000-01-01"},
    )
    assert r.status_code == 200 and all(
        x["game_name"] == "Counter-Strike" for x in r.json()["results"]
    )


@pytest.mark.parametrize("q", HOSTILE)
def test_hostile_queries_get_results_or_422_never_500(api, q):
    client, _ = api
    for mode in ("keyword", "hybrid"):
        r = client.get("/search", params={"q": q, "mode": mode})
        assert r.status_code in (200, 422), (q, r.status_code, r.text)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"q": ""}, "empty"),
        ({"q": "   \u200b "}, "empty"),
        ({"q": "x" * 501}, "at most 500"),
        ({"q": "x" * 10_001}, "at most 500"),
        ({"q": "x", "limit": 0}, "greater than or equal to 1"),
        ({"q": "x", "limit": 101}, "less than or equal to 100"),
        ({"q": "x", "offset": -1}, "greater than or equal to 0"),
        ({"q": "x", "offset": 150, "limit": 100}, "offset + limit"),
        ({"q": "x", "mode": "fuzzy"}, "hybrid"),
        ({"q": "x", "from": "yesterday"}, "datetime"),
        ({"q": "x", "from": "2024-02-01", "to": "2024-01-01"}, "before"),
        ({}, "Field required"),
    ],
)
def test_invalid_input_is_422_with_a_clear_message(api, params, fragment):
    client, _ = api
    r = client.get("/search", params=params)
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_similar_and_404(api):
    client, ids = api
    r = client.get(f"/clips/{ids['Creeper blows up the whole house']}/similar", params={"limit": 2})
    assert r.status_code == 200
    assert r.json()["results"][0]["title"] == "Built a giant castle in survival"
    assert client.get("/clips/00000000-0000-0000-0000-000000000000/similar").status_code == 404
    assert client.get("/clips/not-a-uuid/similar").status_code == 422


def test_openapi_healthz_metrics(api, search_db):
    client, _ = api
    spec = client.get("/openapi.json").json()
    assert "/search" in spec["paths"] and "/clips/{clip_id}/similar" in spec["paths"]
    health = client.get("/healthz").json()
    assert (
        health["ok"]
        and health["database"]["ok"]
        and health["provider"]["model"] == "all-MiniLM-L6-v2"
    )
    client.get("/search", params={"q": "clutch"})
    assert client.get("/metrics").status_code == 401  # an admin token is needed
    token = admin_token(search_db[0])
    metrics = client.get("/metrics", headers=bearer(token)).text
    assert "clipembed_texts_total" in metrics
