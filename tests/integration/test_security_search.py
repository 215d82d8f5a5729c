"""Public search over real sockets: per-client limits on requests and on new query embeddings
(429 + Retry-After), and validation errors that echo at most a short prefix of the input
(issue 22, items 3 and 6).

The limits are set so that no refill can happen during a test (one request per 100 s, one new
embedding per 30 s): what each answer is does not depend on how fast the machine is.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx

from clipembed.api import responses
from tests.plugins.rawhttp import raw_exchange

pytest_plugins = ["tests.plugins.browser", "tests.plugins.security"]

OTHER = {"X-Forwarded-For": "198.51.100.20"}  # another client, through the trusted proxy


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30)


def search(c: httpx.Client, q: str, mode: str = "keyword", **headers: str) -> httpx.Response:
    return c.get("/search", params={"q": q, "mode": mode}, headers=headers)


def test_one_client_gets_its_burst_of_searches_then_429_and_others_are_served(secure_server):
    served = secure_server(
        clipembed_search_requests_per_second=0.01,
        clipembed_search_burst=3,
        clipembed_search_refusal_hold_max_s=0.5,
        clipembed_trusted_proxies="127.0.0.1",
    )
    with client(served.base) as c:
        assert [search(c, f"clutch {i}").status_code for i in range(3)] == [200] * 3
        started = time.monotonic()
        refused = search(c, "clutch 4")
        # held before its 429 (its Retry-After is 100 s: the hold's bound, 0.5 s, applies)
        assert time.monotonic() - started >= 0.5
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "too many searches" in refused.json()["detail"]
        similar = c.get(f"/clips/{uuid.uuid4()}/similar")
        assert similar.status_code == 429  # one budget for both endpoints
        assert search(c, "clutch", **OTHER).status_code == 200  # another client's budget
        metrics = c.get("/metrics", headers={"Authorization": f"Bearer {served.token}"}).text
        assert re.search(r'clipembed_search_refused_total\{limit="requests"\} [1-9]', metrics)
        overview = c.get("/admin", headers={"Authorization": f"Bearer {served.token}"}).text
        assert 'data-k="search-refused">2<' in overview


def test_new_query_embeddings_per_client_are_limited_and_cached_ones_are_free(
    secure_server, fake_openai
):
    served = secure_server(
        clipembed_search_embeds_per_minute=2, clipembed_trusted_proxies="127.0.0.1"
    )
    with client(served.base) as c:
        assert search(c, "insane clutch", "semantic").status_code == 200
        assert search(c, "funny car bug", "hybrid").status_code == 200
        sent = fake_openai.stats()["requests"]
        refused = search(c, "creeper house", "semantic")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "mode=keyword" in refused.json()["detail"]
        assert fake_openai.stats()["requests"] == sent  # refused before the provider was asked
        assert search(c, "creeper house", "hybrid").status_code == 429
        # what costs no new embedding is still served: a cached query, keyword search
        assert search(c, "insane clutch", "semantic").status_code == 200
        assert search(c, "creeper house", "keyword").status_code == 200
        assert fake_openai.stats()["requests"] == sent
        # and another client has its own budget
        assert search(c, "creeper house", "semantic", **OTHER).status_code == 200


def test_validation_errors_echo_at_most_a_short_prefix_of_the_input(secure_server):
    """12,000-character inputs come back as 422s of a few hundred bytes. (Sent raw: uvicorn's
    h11 refuses a request head over 16 KiB, so larger inputs never reach the app.)"""
    served = secure_server()
    huge = "x" * 12_000
    auth = f"\r\nAuthorization: Bearer {served.token}"
    for target in [
        f"/search?q={huge}",
        f"/search?q=x&limit={'9' * 12_000}",
        f"/search?q=x&mode={huge}",
        f"/search?q=x&from={huge}",
        f"/clips/{huge}/similar",
        f"/admin/failures?retried={huge}",
    ]:
        answer = raw_exchange(served.address, f"GET {target} HTTP/1.1\r\nHost: x{auth}")
        assert answer.status == 422, (target[:30], answer.status)
        assert len(answer.body) < 2_000, (target[:30], len(answer.body))
        assert "x" * (responses.ECHO_CHARS + 1) not in answer.text
        assert "9" * (responses.ECHO_CHARS + 1) not in answer.text
        for error in json.loads(answer.body)["detail"]:
            assert isinstance(error["msg"], str) and error["msg"]
