"""Batch API files, pure: request lines and the parsing of output and error lines."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed.batches import files

DIMS = 4
BODY = {"model": "text-embedding-3-small", "encoding_format": "base64", "dimensions": DIMS}


def vec(i: float) -> list[float]:
    v = np.array([1.0, i, 0.5, 0.25], dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


def ok_line(cid: str, count: int, *, b64: bool = True, shuffle: bool = False) -> bytes:
    data = []
    for i in range(count):
        v = np.asarray(vec(i), dtype="<f4")
        emb = base64.b64encode(v.tobytes()).decode() if b64 else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    if shuffle:
        data.reverse()
    body = {"object": "list", "data": data, "usage": {"prompt_tokens": 3 * count}}
    line = {
        "id": "r",
        "custom_id": cid,
        "response": {"status_code": 200, "body": body},
        "error": None,
    }
    return json.dumps(line).encode()


def test_request_lines_carry_the_sync_body_and_the_inputs():
    data = files.input_file(
        [files.Request("b1-r0", ("a", "b")), files.Request("b1-r1", ("日本",))], BODY
    )
    lines = [json.loads(x) for x in data.splitlines()]
    assert [x["custom_id"] for x in lines] == ["b1-r0", "b1-r1"]
    assert lines[0]["url"] == "/v1/embeddings" and lines[0]["method"] == "POST"
    assert lines[0]["body"] == {**BODY, "input": ["a", "b"]}
    assert lines[1]["body"]["input"] == ["日本"] and lines[1]["body"]["dimensions"] == DIMS


def test_outputs_in_any_order_are_matched_by_custom_id_and_index():
    lines = [ok_line("b1-r1", 1), ok_line("b1-r0", 3, shuffle=True, b64=False)]
    parsed = files.parse(lines, {"b1-r0": 3, "b1-r1": 1}, dimensions=DIMS)
    assert set(parsed.vectors) == {"b1-r0", "b1-r1"} and not parsed.failures
    np.testing.assert_allclose(parsed.vectors["b1-r0"][2], vec(2), rtol=1e-6)
    assert parsed.tokens == 12


@pytest.mark.parametrize(
    "bad",
    [
        {"response": {"status_code": 500, "body": {"error": {"message": "server error"}}}},
        {"response": None, "error": {"code": "server_error", "message": "boom"}},
        {"response": {"status_code": 200, "body": {"data": [{"index": 0, "embedding": [1, 0]}]}}},
        {"response": {"status_code": 200, "body": {"data": []}}},
        {
            "response": {
                "status_code": 200,
                "body": {"data": [{"index": 0, "embedding": [0, 0, 0, 0]}]},
            }
        },
        {"response": {"status_code": 200, "body": {"data": [{"index": 0, "embedding": "!!"}]}}},
    ],
)
def test_a_line_that_cannot_be_trusted_fails_its_request(bad):
    line = json.dumps({"custom_id": "b1-r0", **bad}).encode()
    parsed = files.parse([line], {"b1-r0": 1}, dimensions=DIMS)
    assert not parsed.vectors and "b1-r0" in parsed.failures


def test_unknown_duplicate_and_torn_lines_are_ignored():
    lines = [b"{torn", ok_line("zz-r9", 1), ok_line("b1-r0", 1), b"", ok_line("b1-r0", 1)]
    parsed = files.parse(lines, {"b1-r0": 1}, dimensions=DIMS)
    assert list(parsed.vectors) == ["b1-r0"] and not parsed.failures


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_garbage_never_raises(lines):
    files.parse(lines, {"b1-r0": 2}, dimensions=DIMS)


def test_lines_that_never_ran_are_neither_answered_nor_failed():
    line = json.dumps(
        {"custom_id": "b1-r0", "response": None, "error": {"code": "batch_expired", "message": "x"}}
    ).encode()
    parsed = files.parse([line], {"b1-r0": 1}, dimensions=DIMS)
    assert not parsed.vectors and not parsed.failures  # its clips are planned again
