"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis), over a real socket.

uvicorn serves the real app on a migrated 768-dimension PostgreSQL holding a few
clips imported and embedded through the fake OpenAI server, so keyword, semantic and hybrid
search all have data. schemathesis generates requests from the app's OpenAPI document: schema-valid
ones and, in negative mode, invalid ones (bad UUIDs and dates, huge numbers, wrong types), plus its
boundary "coverage" cases. A dictionary mixes hostile strings into ``q`` and ``game``; hooks point
``clip_id`` at real clips some of the time and turn a schema-valid but inverted from/to range into
a valid one, so schema-valid cases reach the searches instead of stopping at a 422. Every response
must:

- never be a 5xx;
- for a 4xx, be JSON with a human-readable ``detail``;
- conform to the schema (status code, content type, body).

The one tolerance: rules OpenAPI cannot express (a query that is blank after cleaning, 'from'
not before 'to', offset + limit past the ranking window) reject some schema-valid requests with
the app's own 422 ``{"detail": "<message>"}``; schemathesis's "positive data accepted" check is
waived for exactly those. The tests at the end pin what the first fuzz run found missing from
the schema (404 of similar, the app's string 422s, the 500-character limit), now documented.

/metrics (Prometheus text) is not in the schema (``include_in_schema=False``), so it is not fuzzed.

schemathesis.pytest.from_fixture (the lazy loader that would read /openapi.json from the
running server) fails on pytest 9.2 (``'Function' object has no attribute '_nodeid'``, as of
schemathesis 4.32.5), so the schema is built in process from the same app and checked against the
served /openapi.json in ``test_served_schema_is_the_fuzzed_schema``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import threading
import time
import uuid
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from hypothesis import strategies as st

from clipembed import runtime, settings
from clipembed.api.app import create_app
from clipembed.bulk import backfill
from clipembed.testing import servers
from tests.plugins.jobs import clip_record, load_clips

CLIPS = [
    ("Insane AWP headshot clutch", "Counter-Strike", "en"),
    ("Clutch 1v4 with the deagle", "Counter-Strike", "en"),
    ("Funny bug launches car into space", "Grand Theft Auto V", "en"),
    ("Creeper blows up the whole house", "Minecraft", "en"),
    ("레전드 클러치 플레이", "League of Legends", "ko"),
    ("神プレイすぎる", "Grand Theft Auto V", "ja"),
    ("Boss fight first try no damage", "Elden Ring", "en"),
]

# Schema-valid strings mixed into `q` and `game`: query-language syntax, SQL, NUL and control
# characters, scripts without spaces, bidi overrides, the length limit and one past it.
HOSTILE = [
    '"unbalanced quote',
    "it's",
    "a & b | !c",
    "clutch:*",
    "(clutch <-> ace)",
    "!!!",
    "'; DROP TABLE clips;--",
    "1 OR 1=1",
    "\\x00",
    "clutch\x00ace",
    "%00%27",
    "🔥🔥🔥",
    "神プレイ",
    "레전드 클러치",
    "\u202eevil",
    "x" * 500,
    "x" * 501,
    " \u200b\t",
]

SIMILAR = "/clips/{clip_id}/similar"

# Ids of the clips the running server holds; filled by `served_url` before any case is drawn.
LIVE_CLIP_IDS: list[str] = []


def _openapi() -> dict[str, Any]:
    """The app's OpenAPI document, built in process (no server or database needed)."""
    cfg = settings.Settings(_env_file=None, embedding_provider="local", redis_url="none")
    return create_app(cfg).openapi()


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "dictionaries": {"hostile": {"values": HOSTILE}},
            "parameters": {
                "query.q": {"dictionary": "hostile", "probability": 0.3},
                "query.game": {"dictionary": "hostile", "probability": 0.2},
            },
            "generation": {
                "mode": "all",  # positive and negative (invalid) requests
                "max-examples": 100,
                "deterministic": True,  # hypothesis derandomize: the same cases on every run
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            # A request that is schema-valid but breaks the app's own 422 rules is a known gap
            # (see the module docstring), filtered in `filter_failure`.
            "checks": {"positive_data_acceptance": {"enabled": True}},
        }
    )


schema = schemathesis.openapi.from_dict(_openapi(), config=_config())
# The same document with no tolerance at all, for the strict xfails.
strict_schema = schemathesis.openapi.from_dict(_openapi())


def _string_detail(response) -> bool:
    try:
        return isinstance(response.json().get("detail"), str)
    except ValueError:
        return False


@schema.hook
def filter_failure(context, failure, case, response) -> bool:
    """Drop exactly the app's cross-field 422s (module docstring); keep every other failure."""
    kind = type(failure).__name__
    if kind == "RejectedPositiveData" and response.status_code == 422:
        return not _string_detail(response)
    return True


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half the time, a schema-valid clip_id becomes one of the server's clips."""
    value = (path_parameters or {}).get("clip_id")
    if not LIVE_CLIP_IDS or not isinstance(value, str) or not _is_uuid(value):
        return st.just(path_parameters)
    return st.one_of(
        st.sampled_from(LIVE_CLIP_IDS).map(lambda i: {**path_parameters, "clip_id": i}),
        st.just(path_parameters),
    )


@schema.hook
def map_case(context, case):
    """In a schema-valid case, 'from' not before 'to' becomes a valid range (swapped, or no 'to').

    The rule is the app's, not the schema's (its 422 is pinned by a test below); left
    alone, half the cases with both dates would stop at it and never reach the search.
    """
    query = case.query
    if case.meta is None or case.meta.generation.mode != "positive" or not query:
        return case
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    if start is not None and end is not None and start >= end:
        if start == end:
            del query["to"]
        else:
            query["from"], query["to"] = query["to"], query["from"]
    return case


def _instant(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def four_xx_has_readable_detail(ctx, response, case) -> None:
    """Every 4xx is JSON with a `detail` a person can read: a message or FastAPI's error list."""
    if not 400 <= response.status_code < 500:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        f"{response.status_code} is not JSON: {response.headers.get('content-type')}"
    )
    detail = response.json().get("detail")
    if isinstance(detail, str):
        assert detail.strip(), f"{response.status_code} with an empty detail"
    else:
        assert isinstance(detail, list) and detail, f"{response.status_code} detail: {detail!r}"
        for item in detail:
            assert isinstance(item.get("msg"), str) and item["msg"].strip(), item
            assert isinstance(item.get("loc"), list), item
    return None


@pytest.fixture
def served_url(openai_settings, database_url, tmp_path):
    """The real app under uvicorn on a real port, over clips embedded by the fake provider."""
    records = [
        clip_record(i, title=title, game_name=game, language=lang)
        for i, (title, game, lang) in enumerate(CLIPS)
    ]
    asyncio.run(load_clips(database_url, records, tmp_path))
    # a generous query-embedding deadline: on a busy CI machine a slow answer from the fake
    # provider would be a semantic 503, which is not what this test is about
    # The per-client search limits are off: every fuzz case comes from this one address, and
    # a 429 would stop a case before the validation this test is about (the limits have their
    # own tests in test_security_search.py)
    cfg = openai_settings(
        database_url=database_url,
        search_embed_timeout_ms=10_000,
        clipembed_search_requests_per_second=0,
        clipembed_search_embeds_per_minute=0,
    )

    async def embed() -> list[str]:
        async with runtime.open_runtime(cfg) as rt:
            summary = await backfill.run(rt)
            assert summary.failed == 0, summary
            async with rt.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id::text FROM clips WHERE embedding IS NOT NULL ORDER BY twitch_clip_id"
                )
                return [row[0] for row in await cur.fetchall()]

    LIVE_CLIP_IDS[:] = asyncio.run(embed())
    assert len(LIVE_CLIP_IDS) == len(CLIPS)

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg), host="127.0.0.1", port=servers.free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        LIVE_CLIP_IDS.clear()
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "shutdown hung"


@pytest.fixture
def statuses():
    """Status codes one operation's fuzz run got; it must have reached real results too."""
    seen: collections.Counter[int] = collections.Counter()
    yield seen
    print(f"\n{sum(seen.values())} requests: {dict(sorted(seen.items()))}")
    # /healthz takes no input: a handful of cases; the searches must get past validation often
    wanted = 1 if sum(seen.values()) < 50 else 5
    assert seen[200] >= wanted, f"the fuzz barely got past validation: {dict(seen)}"


@schema.parametrize()
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_api_fuzz(case, served_url, statuses):
    response = case.call_and_validate(
        base_url=served_url, additional_checks=[four_xx_has_readable_detail], timeout=30
    )
    statuses[response.status_code] += 1


def test_served_schema_is_the_fuzzed_schema(served_url):
    served = httpx.get(f"{served_url}/openapi.json", timeout=10).json()
    assert served == _openapi()
    assert set(served["paths"]) == {"/search", SIMILAR, "/healthz"}  # /metrics is hidden


def _strict_call(served_url, path, **kwargs):
    """One request validated with every default check and no tolerance (``strict_schema``)."""
    case = strict_schema[path]["GET"].Case(**kwargs)
    return case.call_and_validate(
        base_url=served_url, additional_checks=[four_xx_has_readable_detail], timeout=30
    )


def test_schema_documents_the_404_of_similar(served_url):
    r = _strict_call(served_url, SIMILAR, path_parameters={"clip_id": str(uuid.UUID(int=0))})
    assert r.status_code == 404


def test_schema_documents_the_apps_own_422(served_url):
    r = _strict_call(
        served_url,
        "/search",
        query={"q": "x", "from": "2024-02-01T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
    )
    assert r.status_code == 422 and "before" in r.json()["detail"]


def test_schema_documents_the_500_character_query_limit(served_url):
    (q,) = [p for p in _openapi()["paths"]["/search"]["get"]["parameters"] if p["name"] == "q"]
    assert q["schema"]["maxLength"] == 500
    ok = httpx.get(f"{served_url}/search", params={"q": "x" * 500}, timeout=30)
    assert ok.status_code == 200, ok.text
    too_long = _strict_call(served_url, "/search", query={"q": "x" * 501})
    assert too_long.status_code == 422
