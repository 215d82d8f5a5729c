"""The fake's Files and Batch APIs, driven through the official ``openai`` SDK.

Other tests trust the fake's batches to behave like OpenAI's, so the contract is pinned here:
upload, create, the lifecycle (instant, stepwise, manual), output and error files whose lines
carry the same bodies as ``/v1/embeddings``, input validation, failing lines, expiry with
partial output, cancellation, the enqueued-token limit and listing.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import openai
import pytest

from clipembed.testing import fakeopenai

KEY = "sk-fake-test-key"
MODEL = "text-embedding-3-small"


def line(custom_id, texts, *, dims=8, model=MODEL, url="/v1/embeddings", **body):
    body = {"model": model, "input": texts, **body}
    if dims is not None:
        body["dimensions"] = dims
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines):
    return "".join(json.dumps(item) + "\n" for item in lines).encode()


@pytest.fixture
def client(fake_openai):
    with openai.OpenAI(api_key=KEY, base_url=fake_openai.base_url, max_retries=0) as c:
        yield c


def upload(client, lines, name="input.jsonl"):
    data = lines if isinstance(lines, bytes) else jsonl(lines)
    return client.files.create(file=(name, data), purpose="batch")


def submit(client, lines):
    file = upload(client, lines)
    return client.batches.create(
        input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
    )


def download(client, file_id):
    return [json.loads(row) for row in client.files.content(file_id).content.splitlines()]


def vector_of(item):
    emb = item["embedding"]
    if isinstance(emb, str):
        return np.frombuffer(base64.b64decode(emb), dtype="<f4")
    return np.asarray(emb, dtype=np.float32)


def control(server, **changes):
    return httpx.post(server.base_url.removesuffix("/v1") + "/_control", json=changes, timeout=10)


def test_upload_create_retrieve_to_completion_and_download(fake_openai, client):
    lines = [
        line("clip-1", ["Title: Insane clutch!", "神プレイ 🔥"], dims=16),
        line("clip-2", ["b"], dims=8, encoding_format="base64"),
        line("clip-3", "a single string", dims=None),
    ]
    data = jsonl(lines)
    file = upload(client, lines)
    assert isinstance(file, openai.types.FileObject)
    assert file.id.startswith("file-") and file.purpose == "batch" and file.bytes == len(data)
    assert file.filename == "input.jsonl" and file.object == "file"
    assert client.files.content(file.id).content == data  # the raw bytes back

    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"run": "test"},
    )
    assert isinstance(batch, openai.types.Batch)
    assert batch.id.startswith("batch_") and batch.status == "validating"
    assert batch.endpoint == "/v1/embeddings" and batch.input_file_id == file.id
    assert batch.completion_window == "24h" and batch.metadata == {"run": "test"}
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.output_file_id is None and batch.completed_at is None

    done = client.batches.retrieve(batch.id)  # "instant": the first look finds it completed
    assert done.status == "completed" and done.model == MODEL
    assert done.request_counts == openai.types.BatchRequestCounts(total=3, completed=3, failed=0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.error_file_id is None and done.errors is None
    assert done.usage is not None and done.usage.input_tokens > 0

    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"
    rows = download(client, done.output_file_id)
    assert [r["custom_id"] for r in rows] == ["clip-1", "clip-2", "clip-3"]
    for row, sent in zip(rows, lines, strict=True):
        assert row["id"].startswith("batch_req_") and row["error"] is None
        response = row["response"]
        assert response["status_code"] == 200 and response["request_id"].startswith("req_")
        body = response["body"]
        assert body["object"] == "list" and body["model"] == MODEL
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
        texts = sent["body"]["input"]
        texts = [texts] if isinstance(texts, str) else texts
        dims = sent["body"].get("dimensions", 1536)
        assert [d["index"] for d in body["data"]] == list(range(len(texts)))
        for text, item in zip(texts, body["data"], strict=True):
            np.testing.assert_array_equal(vector_of(item), fakeopenai.expected_vector(text, dims))
    assert isinstance(rows[1]["response"]["body"]["data"][0]["embedding"], str)  # base64 kept

    stats = fake_openai.stats()
    assert stats["files_uploaded"] == 1 and stats["file_bytes_uploaded"] == len(data)
    assert stats["batches_created"] == 1 and stats["batch_lines_processed"] == 3
    assert stats["batch_lines_by_status"] == {"200": 3}
    assert stats["batch_inputs"] == 4 and stats["texts_embedded"] == 4
    assert stats["input_files_batched_more_than_once"] == 0
    assert stats["batch_custom_ids_more_than_once"] == 0
    assert stats["batch_outcomes"] == {"completed": 1}
    assert stats["batches_by_status"] == {"completed": 1}
    assert stats["requests"] == 0  # nothing went through the synchronous endpoint


def test_stepwise_lifecycle(fake_openai, client):
    fake_openai.control(batch_mode="stepwise", batch_lines_per_poll=1)
    batch = submit(client, [line("a", ["x"]), line("b", ["y"])])
    seen = [(b.status, b.request_counts.completed if b.request_counts else None) for b in [batch]]
    for _ in range(4):
        b = client.batches.retrieve(batch.id)
        seen.append((b.status, b.request_counts.completed))
    assert seen == [
        ("validating", 0),
        ("in_progress", 0),
        ("in_progress", 1),
        ("finalizing", 2),
        ("completed", 2),
    ]
    assert client.batches.retrieve(batch.id).status == "completed"  # and stays so


async def test_the_async_client(fake_openai):
    async with openai.AsyncOpenAI(api_key=KEY, base_url=fake_openai.base_url) as client:
        file = await client.files.create(
            file=("in.jsonl", jsonl([line("a", ["x"])])), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        batch = await client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.output_file_id
        content = await client.files.content(batch.output_file_id)
    (row,) = [json.loads(r) for r in content.content.splitlines()]
    vec = vector_of(row["response"]["body"]["data"][0])
    np.testing.assert_array_equal(vec, fakeopenai.expected_vector("x", 8))


@pytest.mark.parametrize(
    ("options", "content", "code", "line_no"),
    [
        ({}, jsonl([line("a", ["x"]), line("a", ["y"])]), "duplicate_custom_id", 2),
        ({}, jsonl([line("a", ["x"], url="/v1/chat/completions")]), "invalid_url", 1),
        ({}, jsonl([line("a", ["x"])]) + b"{not json\n", "invalid_json_line", 2),
        ({}, jsonl([{"custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {}}]),
         "invalid_method", 1),
        ({}, jsonl([{"method": "POST", "url": "/v1/embeddings", "body": {}}]),
         "missing_required_parameter", 1),
        ({}, jsonl([line("a", ["x"]), line("b", ["x"], model="text-embedding-3-large")]),
         "mismatched_model", None),
        ({}, b"", "empty_file", None),
        ({"batch_max_lines": 2}, jsonl([line(str(i), ["x"]) for i in range(3)]),
         "too_many_requests", None),
        ({"batch_max_file_bytes": 50}, jsonl([line("a", ["x"])]), "file_too_large", None),
        ({"batch_max_inputs": 3}, jsonl([line("a", ["x", "y"]), line("b", ["z", "w"])]),
         "too_many_inputs", None),
    ],
)  # fmt: skip
def test_an_invalid_input_file_fails_the_batch(
    fake_openai, client, options, content, code, line_no
):
    fake_openai.control(**options)
    batch = submit(client, content)
    assert batch.status == "validating"  # validation happens after creation, as in the API
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.failed_at and failed.in_progress_at is None
    assert failed.errors is not None and failed.errors.object == "list"
    first = failed.errors.data[0]
    assert (first.code, first.line) == (code, line_no) and first.message
    assert failed.output_file_id is None and failed.error_file_id is None
    stats = fake_openai.stats()
    assert stats["batch_lines_processed"] == 0 and stats["batch_lines_enqueued"] == 0
    assert stats["batch_outcomes"] == {"failed": 1}


def test_failing_lines_go_to_the_error_file(fake_openai, client):
    fake_openai.control(batch_fail_lines=["boom"])
    lines = [
        line("ok-1", ["x"]),
        line("boom", ["y"]),  # injected: 500
        line("empty", ["", "z"]),  # refused like the synchronous endpoint would: 400
        line("too-wide", ["x"], dims=1537),  # 400 as well
        line("ok-2", ["w"]),
    ]
    batch = client.batches.retrieve(submit(client, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 3}
    assert [r["custom_id"] for r in download(client, batch.output_file_id)] == ["ok-1", "ok-2"]
    errors = {r["custom_id"]: r for r in download(client, batch.error_file_id)}
    assert set(errors) == {"boom", "empty", "too-wide"}
    assert errors["boom"]["response"]["status_code"] == 500
    assert errors["boom"]["response"]["body"]["error"]["type"] == "server_error"
    assert errors["empty"]["response"]["status_code"] == 400
    assert "empty string" in errors["empty"]["response"]["body"]["error"]["message"]
    assert "dimensions" in errors["too-wide"]["response"]["body"]["error"]["message"]
    assert all(r["error"] is None for r in errors.values())  # HTTP errors: in the response
    stats = fake_openai.stats()
    assert stats["batch_lines_by_status"] == {"200": 2, "400": 2, "500": 1}
    assert stats["texts_embedded"] == 2  # a failed line embeds nothing


def test_random_line_failures_are_seeded(fake_openai_factory):
    def run(seed):
        server = fake_openai_factory(batch_fail_rate=0.5, batch_fail_status=400, seed=seed)
        with openai.OpenAI(api_key=KEY, base_url=server.base_url) as c:
            batch = c.batches.retrieve(submit(c, [line(str(i), ["x"]) for i in range(12)]).id)
            return sorted(r["custom_id"] for r in download(c, batch.error_file_id))

    first = run(3)
    assert first == run(3) and 0 < len(first) < 12


def test_expiry_keeps_the_finished_lines_and_reports_the_rest(fake_openai, client):
    fake_openai.control(batch_mode="manual")
    batch = submit(client, [line(f"c{i}", [f"text {i}"]) for i in range(5)])
    assert client.batches.retrieve(batch.id).status == "in_progress"
    fake_openai.control(batch_process={batch.id: 2})
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress"
    assert running.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 0}
    assert control(fake_openai, batch_expire=batch.id).status_code == 200
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired" and expired.expired_at and expired.completed_at is None
    assert [r["custom_id"] for r in download(client, expired.output_file_id)] == ["c0", "c1"]
    rest = download(client, expired.error_file_id)
    assert [r["custom_id"] for r in rest] == ["c2", "c3", "c4"]
    assert all(r["response"] is None for r in rest)
    assert {r["error"]["code"] for r in rest} == {"batch_expired"}
    assert fake_openai.stats()["batch_lines_processed"] == 2


def test_a_batch_expires_when_its_window_ends(fake_openai, client):
    fake_openai.control(batch_mode="manual", batch_completion_window_seconds=1)
    batch = submit(client, [line("a", ["x"])])
    assert batch.expires_at == batch.created_at + 1
    assert client.batches.retrieve(batch.id).status == "in_progress"
    time.sleep(1.1)
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired" and expired.output_file_id is None
    (row,) = download(client, expired.error_file_id)
    assert row["error"]["code"] == "batch_expired"


def test_cancel(fake_openai, client):
    fake_openai.control(batch_mode="manual")
    batch = submit(client, [line(f"c{i}", ["x"]) for i in range(3)])
    client.batches.retrieve(batch.id)
    fake_openai.control(batch_process={batch.id: 1})
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    assert [r["custom_id"] for r in download(client, cancelled.output_file_id)] == ["c0"]
    rest = download(client, cancelled.error_file_id)
    assert {r["error"]["code"] for r in rest} == {"batch_cancelled"} and len(rest) == 2
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    # a batch cancelled before it was even validated never runs a line
    early = submit(client, [line("a", ["x"])])
    assert client.batches.cancel(early.id).status == "cancelling"
    gone = client.batches.retrieve(early.id)
    assert gone.status == "cancelled" and gone.output_file_id is None
    assert fake_openai.stats()["batch_lines_processed"] == 1


def test_enqueued_token_limit(fake_openai, client):
    fake_openai.control(batch_mode="manual", batch_queue_tokens=10)
    six = submit(client, [line("a", ["one two three four five six"])])
    assert client.batches.retrieve(six.id).status == "in_progress"
    assert fake_openai.stats()["batch_tokens_in_queue"] == 6
    five = submit(client, [line("b", ["one two three four five"])])
    over = client.batches.retrieve(five.id)
    assert over.status == "failed"
    (error,) = over.errors.data
    assert error.code == "token_limit_exceeded" and "Enqueued token limit reached" in error.message
    assert "Limit: 10 enqueued tokens" in error.message
    fake_openai.control(batch_complete=six.id)  # the queue empties
    assert fake_openai.stats()["batch_tokens_in_queue"] == 0
    again = submit(client, [line("b", ["one two three four five"])])
    assert client.batches.retrieve(again.id).status == "in_progress"
    other_model = submit(client, [line("c", ["one two three four five six"], model="m")])
    assert client.batches.retrieve(other_model.id).status == "in_progress"  # per model


def test_list_batches_newest_first_with_pages(fake_openai, client):
    fake_openai.control(batch_mode="manual")
    ids = [submit(client, [line("a", [f"t{i}"])]).id for i in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    assert [b.id for b in client.batches.list(limit=2).iter_pages().__next__().data] == ids[:0:-1]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-pagination
    assert {b.status for b in client.batches.list()} == {"in_progress"}


def test_files_list_retrieve_delete(fake_openai, client):
    a = upload(client, [line("a", ["x"])], name="a.jsonl")
    b = upload(client, [line("b", ["y"])], name="b.jsonl")
    assert [f.id for f in client.files.list(purpose="batch")] == [b.id, a.id]
    assert client.files.retrieve(a.id).filename == "a.jsonl"
    batch = client.batches.create(
        input_file_id=a.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    deleted = client.files.delete(a.id)
    assert deleted.deleted and deleted.id == a.id
    with pytest.raises(openai.NotFoundError):
        client.files.content(a.id)
    assert [f.id for f in client.files.list()] == [b.id]
    # the batch read its input when it was created
    assert client.batches.retrieve(batch.id).status == "completed"
    assert len(client.files.list(purpose="batch_output").data) == 1


def test_create_refusals(fake_openai, client):
    file = upload(client, [line("a", ["x"])])
    other = client.files.create(file=("notes.txt", b"hi"), purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        client.batches.create(
            input_file_id=other.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/embeddings",
            completion_window="1h",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError, match="only /v1/embeddings"):
        client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    assert fake_openai.stats()["batches_created"] == 0


def test_auth_applies_to_files_and_batches(fake_openai_factory):
    server = fake_openai_factory(api_key=KEY)
    with openai.OpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.files.create(file=("in.jsonl", b"{}"), purpose="batch")
        with pytest.raises(openai.AuthenticationError):
            c.batches.list()
    assert server.stats()["files_uploaded"] == 0


def test_control_actions_are_checked(fake_openai, client):
    fake_openai.control(batch_mode="manual")
    assert control(fake_openai, batch_complete="batch_nope").status_code == 400
    assert control(fake_openai, batch_mode="sometimes").status_code == 400
    assert control(fake_openai, batch_fail_lines="a").status_code == 400
    batch = submit(client, [line("a", ["x"])])
    # an action on a batch still validating validates it first
    assert control(fake_openai, batch_complete=batch.id).status_code == 200
    assert client.batches.retrieve(batch.id).status == "completed"
    refused = control(fake_openai, batch_expire=batch.id, batch_mode="instant")
    assert refused.status_code == 400 and "completed" in refused.json()["error"]["message"]
    assert fake_openai.state.options.batch_mode == "manual"  # all or nothing
