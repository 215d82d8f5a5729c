"""``import --vectors``'s pure parts: the vector check, the row parser and the file readers.

No database: :func:`check_vector` and :func:`parse_record` are pure, :func:`read_records`
only reads a file (JSON Lines, gzipped JSON Lines, Parquet) written to ``tmp_path``.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clipembed.bulk import vector_import as vectors
from clipembed.bulk.vector_import import (
    HALF_MAX,
    MAX_REPORTED,
    ImportReport,
    Row,
    VectorFileError,
    check_vector,
    parse_record,
    read_records,
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
STORAGES = st.sampled_from(["vector", "halfvec"])

#: finite float32 values (exactly representable: the float32 result must equal them)
f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
#: finite values within half precision's range
in_half = st.floats(min_value=-HALF_MAX, max_value=HALF_MAX, allow_nan=False, width=32)


def nonzero(values: list[float]) -> bool:
    return any(v != 0 for v in values)


@st.composite
def vector_and_dims(draw: st.DrawFn, elements: st.SearchStrategy[float] = f32):
    """A non-zero list of ``elements`` and its length."""
    values = draw(st.lists(elements, min_size=1, max_size=64).filter(nonzero))
    return values, len(values)


def reason(value, *, dimensions: int, storage: str = "vector") -> str:
    with pytest.raises(ValueError) as caught:
        check_vector(value, dimensions=dimensions, storage=storage)
    return str(caught.value)


# --- check_vector: what is accepted ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(case=vector_and_dims(), as_tuple=st.booleans())
def test_any_finite_non_zero_float32_list_of_the_right_length_is_accepted_unchanged(case, as_tuple):
    values, dims = case
    out = check_vector(tuple(values) if as_tuple else values, dimensions=dims, storage="vector")
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32 and out.shape == (dims,)
    assert out.tolist() == [float(np.float32(v)) for v in values]
    assert np.all(np.isfinite(out)) and np.any(out)


@settings(max_examples=200, deadline=None)
@given(case=vector_and_dims(in_half))
def test_values_within_half_range_are_accepted_by_halfvec_storage(case):
    values, dims = case
    assume(np.any(np.asarray(values, dtype=np.float16)))  # else it is all zeros once stored
    out = check_vector(values, dimensions=dims, storage="halfvec")
    assert out.dtype == np.float32 and out.shape == (dims,)
    np.testing.assert_array_equal(out, np.asarray(values, dtype=np.float32))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(-(2**24), 2**24), min_size=1, max_size=32).filter(nonzero))
def test_integers_are_numbers_too(values):
    out = check_vector(values, dimensions=len(values), storage="vector")
    assert out.dtype == np.float32
    assert out.tolist() == [float(v) for v in values]


def test_a_numpy_array_is_accepted():
    arr = np.array([0.25, -1.5, 3.0], dtype=np.float64)
    out = check_vector(arr, dimensions=3, storage="halfvec")
    assert out.dtype == np.float32 and out.tolist() == [0.25, -1.5, 3.0]


def test_exactly_half_max_is_still_within_halfvec_range():
    out = check_vector([HALF_MAX, -HALF_MAX, 1.0], dimensions=3, storage="halfvec")
    assert out.tolist() == [65504.0, -65504.0, 1.0]


def test_a_vector_with_one_non_zero_value_is_not_all_zeros():
    out = check_vector([0.0, -0.0, 0.0, 1e-3], dimensions=4, storage="vector")
    assert out.tolist() == [0.0, 0.0, 0.0, pytest.approx(1e-3)]


# --- check_vector: what is rejected, and why ---------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(f32, min_size=0, max_size=40),
    dims=st.integers(1, 40),
    storage=STORAGES,
)
def test_a_wrong_length_is_rejected_with_both_counts(values, dims, storage):
    if len(values) == dims:
        values = [*values, 1.0]
    message = reason(values, dimensions=dims, storage=storage)
    assert message == f"the vector has {len(values)} dimensions, the space {dims}"


@settings(max_examples=200, deadline=None)
@given(
    case=vector_and_dims(in_half),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
    where=st.integers(0, 63),
    storage=STORAGES,
)
def test_nan_or_infinity_anywhere_is_rejected(case, bad, where, storage):
    values, dims = case
    values[where % dims] = bad
    assert reason(values, dimensions=dims, storage=storage) == "the vector holds NaN or infinity"


@settings(max_examples=100, deadline=None)
@given(zeros=st.lists(st.sampled_from([0.0, -0.0, 0]), min_size=1, max_size=64), storage=STORAGES)
def test_all_zeros_are_rejected(zeros, storage):
    message = reason(zeros, dimensions=len(zeros), storage=storage)
    assert "all zeros" in message and "cosine" in message


@settings(max_examples=100, deadline=None)
@given(
    case=vector_and_dims(in_half),
    bad=st.booleans(),
    where=st.integers(0, 63),
    storage=STORAGES,
)
def test_a_boolean_inside_is_not_a_number(case, bad, where, storage):
    values, dims = case
    values[where % dims] = bad
    message = reason(values, dimensions=dims, storage=storage)
    assert message == "'vector' holds something that is not a number"


@settings(max_examples=100, deadline=None)
@given(
    case=vector_and_dims(in_half),
    bad=st.one_of(
        st.text().filter(lambda s: not _numeric(s)),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.lists(st.integers(), min_size=2, max_size=3),
    ),
    where=st.integers(0, 63),
    storage=STORAGES,
)
def test_a_string_or_container_inside_is_not_a_number(case, bad, where, storage):
    values, dims = case
    values[where % dims] = bad
    message = reason(values, dimensions=dims, storage=storage)
    assert message == "'vector' holds something that is not a number"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("storage", ["vector", "halfvec"])
def test_a_numeric_string_inside_is_not_a_number(storage):
    assert reason(["1.5", "2"], dimensions=2, storage=storage) == (
        "'vector' holds something that is not a number"
    )


@settings(max_examples=200, deadline=None)
@given(
    case=vector_and_dims(in_half),
    big=st.floats(min_value=HALF_MAX, max_value=FLOAT32_MAX, exclude_min=True, width=32),
    sign=st.sampled_from([1.0, -1.0]),
    where=st.integers(0, 63),
)
def test_values_beyond_half_range_are_rejected_by_halfvec_only(case, big, sign, where):
    values, dims = case
    values[where % dims] = sign * big
    message = reason(values, dimensions=dims, storage="halfvec")
    assert "half precision" in message and "65504" in message and "vector storage" in message
    # the same vector is fine with single precision
    out = check_vector(values, dimensions=dims, storage="vector")
    assert out[where % dims] == np.float32(sign * big)


@pytest.mark.parametrize("value", [None, "0.1, 0.2", 0.5, {"0": 0.1, "1": 0.2}, b"ab"])
def test_something_that_is_not_a_list_is_rejected(value):
    assert reason(value, dimensions=2) == "'vector' must be a list of numbers"


@pytest.mark.parametrize(
    "value", [[[1.0, 2.0], [3.0, 4.0]], [[1.0], [2.0, 3.0]], [[1.0, 2.0], 3.0]]
)
def test_nested_lists_are_rejected(value):
    assert reason(value, dimensions=len(value)) == "'vector' holds something that is not a number"


def test_a_null_inside_is_rejected():
    # (the reason given is the NaN one: numpy turns None into NaN)
    with pytest.raises(ValueError):
        check_vector([None, 1.0], dimensions=2, storage="vector")


@pytest.mark.filterwarnings("error:overflow encountered in cast:RuntimeWarning")
def test_a_value_beyond_single_precision_is_rejected():
    with pytest.raises(ValueError):
        check_vector([1e39, 1.0], dimensions=2, storage="vector")


def test_an_integer_too_large_for_a_float_is_rejected_with_a_reason():
    huge = json.loads("[1" + "0" * 400 + ", 1]")
    with pytest.raises(ValueError):
        check_vector(huge, dimensions=2, storage="vector")


def test_values_that_underflow_single_precision_to_zero_are_all_zeros():
    assert "all zeros" in reason([1e-50, 1e-50], dimensions=2, storage="vector")


# --- parse_record --------------------------------------------------------------------------


def test_a_record_keyed_by_clip_id():
    cid = uuid.uuid4()
    row = parse_record(7, {"clip_id": str(cid), "vector": [1, 2]}, dimensions=2, storage="vector")
    assert isinstance(row, Row)
    assert row.line == 7 and row.clip_id == cid and row.twitch_clip_id is None
    assert row.vector.dtype == np.float32 and row.vector.tolist() == [1.0, 2.0]


def test_a_record_keyed_by_twitch_clip_id_is_stripped():
    row = parse_record(
        3, {"twitch_clip_id": "  AwkwardHelplessSalamander \n", "vector": [0.5]}, dimensions=1,
        storage="halfvec",
    )  # fmt: skip
    assert row.line == 3 and row.clip_id is None
    assert row.twitch_clip_id == "AwkwardHelplessSalamander"
    assert row.vector.tolist() == [0.5]


def test_clip_id_wins_over_twitch_clip_id_and_an_empty_clip_id_falls_back():
    cid = uuid.uuid4()
    both = parse_record(
        1, {"clip_id": str(cid), "twitch_clip_id": "X", "vector": [1.0]}, dimensions=1,
        storage="vector",
    )  # fmt: skip
    assert both.clip_id == cid and both.twitch_clip_id is None
    empty = parse_record(
        2, {"clip_id": "", "twitch_clip_id": "X", "vector": [1.0]}, dimensions=1, storage="vector"
    )
    assert empty.clip_id is None and empty.twitch_clip_id == "X"
    null = parse_record(
        3, {"clip_id": None, "twitch_clip_id": "Y", "vector": [1.0]}, dimensions=1,
        storage="vector",
    )  # fmt: skip
    assert null.clip_id is None and null.twitch_clip_id == "Y"


@settings(max_examples=100, deadline=None)
@given(cid=st.uuids(), case=vector_and_dims(in_half), line=st.integers(1, 10**9))
def test_parse_record_returns_the_key_line_and_vector(cid, case, line):
    values, dims = case
    assume(np.any(np.asarray(values, dtype=np.float16)))  # else it is all zeros once stored
    row = parse_record(
        line, {"clip_id": str(cid), "vector": values}, dimensions=dims, storage="halfvec"
    )
    assert (row.line, row.clip_id, row.twitch_clip_id) == (line, cid, None)
    np.testing.assert_array_equal(row.vector, np.asarray(values, dtype=np.float32))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ([1, 2], "not a JSON object"),
        ("a string", "not a JSON object"),
        (None, "not a JSON object"),
        (42, "not a JSON object"),
        ({"vector": [1.0, 2.0]}, "neither clip_id nor twitch_clip_id"),
        ({"twitch_clip_id": "   ", "vector": [1.0, 2.0]}, "neither clip_id nor twitch_clip_id"),
        ({"twitch_clip_id": 12345, "vector": [1.0, 2.0]}, "neither clip_id nor twitch_clip_id"),
        ({"clip_id": "not-a-uuid", "vector": [1.0, 2.0]}, "clip_id 'not-a-uuid' is not a uuid"),
        ({"clip_id": 17, "vector": [1.0, 2.0]}, "clip_id '17' is not a uuid"),
        ({"twitch_clip_id": "Clip1"}, "no 'vector'"),
        ({"clip_id": str(uuid.UUID(int=5))}, "no 'vector'"),
        ({"twitch_clip_id": "Clip1", "vector": None}, "'vector' must be a list of numbers"),
        ({"twitch_clip_id": "Clip1", "vector": [1.0]}, "the vector has 1 dimensions, the space 2"),
        ({"twitch_clip_id": "Clip1", "vector": [0, 0]}, "all zeros"),
        ({"twitch_clip_id": "Clip1", "vector": [math.nan, 1]}, "NaN or infinity"),
    ],
)
def test_a_bad_record_says_why(record, expected):
    with pytest.raises(ValueError) as caught:
        parse_record(1, record, dimensions=2, storage="vector")
    assert expected in str(caught.value)


def test_a_long_bad_clip_id_is_cut_in_the_reason():
    with pytest.raises(ValueError) as caught:
        parse_record(1, {"clip_id": "x" * 500, "vector": [1.0]}, dimensions=1, storage="vector")
    assert str(caught.value) == f"clip_id {'x' * 60!r} is not a uuid"


# --- read_records: JSON Lines ------------------------------------------------------------


def test_jsonl_lines_are_numbered_by_file_line_and_blank_lines_are_skipped(tmp_path: Path):
    path = tmp_path / "v.jsonl"
    path.write_text(
        '{"clip_id": "a", "vector": [1]}\n'
        "\n"
        "   \n"
        '{"twitch_clip_id": "b", "vector": [2, 3]}\n'
        "{not json\n"
        "[1, 2, 3]\n"
        '{"twitch_clip_id": "c", "vector": [NaN]}\n'
        "\n",
        encoding="utf-8",
    )
    out = list(read_records(path))
    assert [n for n, _ in out] == [1, 4, 5, 6, 7]
    assert out[0][1] == {"clip_id": "a", "vector": [1]}
    assert out[1][1] == {"twitch_clip_id": "b", "vector": [2, 3]}
    bad = out[2][1]
    assert isinstance(bad, ValueError) and str(bad).startswith("not JSON (")
    assert out[3][1] == [1, 2, 3]  # decoded: parse_record says it is not an object
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_record(6, out[3][1], dimensions=3, storage="vector")
    nan_record = out[4][1]
    assert isinstance(nan_record, dict) and math.isnan(nan_record["vector"][0])


def test_a_file_without_a_final_newline_and_crlf_lines(tmp_path: Path):
    path = tmp_path / "v.ndjson"
    path.write_bytes(b'{"twitch_clip_id": "a", "vector": [1]}\r\n\r\n{"twitch_clip_id": "b"}')
    assert list(read_records(path)) == [
        (1, {"twitch_clip_id": "a", "vector": [1]}),
        (3, {"twitch_clip_id": "b"}),
    ]


def test_gzipped_jsonl_is_read(tmp_path: Path):
    records = [{"twitch_clip_id": f"Clip{i}", "vector": [i + 0.5, -i]} for i in range(50)]
    path = tmp_path / "v.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
        fh.write("\n\nnope\n")
    out = list(read_records(path))
    assert out[:50] == list(enumerate(records, start=1))
    assert [n for n, _ in out[50:]] == [53]
    assert isinstance(out[50][1], ValueError) and "not JSON" in str(out[50][1])


@pytest.mark.parametrize("name", ["v.JSONL", "v.json", "v.ndjson", "V.Json.Gz"])
def test_the_json_extensions_are_recognised_in_any_case(tmp_path: Path, name: str):
    path = tmp_path / name
    line = json.dumps({"twitch_clip_id": "x", "vector": [1.0]}) + "\n"
    if name.lower().endswith(".gz"):
        path.write_bytes(gzip.compress(line.encode()))
    else:
        path.write_text(line, encoding="utf-8")
    assert list(read_records(path)) == [(1, {"twitch_clip_id": "x", "vector": [1.0]})]


@pytest.mark.parametrize("name", ["v.csv", "v.txt", "vectors", "v.jsonl.bz2", "v.parquet.gz"])
def test_an_unknown_extension_is_a_vector_file_error(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_text('{"twitch_clip_id": "x", "vector": [1.0]}\n', encoding="utf-8")
    with pytest.raises(VectorFileError, match=r"use \.jsonl, \.jsonl\.gz or \.parquet"):
        list(read_records(path))


def test_a_missing_file_is_a_vector_file_error(tmp_path: Path):
    with pytest.raises(VectorFileError, match="cannot be read"):
        list(read_records(tmp_path / "absent.jsonl"))


def test_a_corrupt_gzip_is_a_vector_file_error(tmp_path: Path):
    path = tmp_path / "v.jsonl.gz"
    path.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(VectorFileError, match=r"v\.jsonl\.gz: cannot be read"):
        list(read_records(path))


def test_invalid_utf8_is_a_vector_file_error(tmp_path: Path):
    path = tmp_path / "v.jsonl"
    path.write_bytes(b'{"twitch_clip_id": "\xff\xfe", "vector": [1]}\n')
    with pytest.raises(VectorFileError, match="cannot be read"):
        list(read_records(path))


# --- read_records: Parquet ------------------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(7)
    dims = 16
    ids = [uuid.uuid4() for _ in range(3)]
    vecs = rng.standard_normal((5, dims)).astype(np.float32)
    table = pa.table(
        {
            "clip_id": [str(ids[0]), None, str(ids[1]), "", str(ids[2])],
            "twitch_clip_id": [None, "ClipA", None, "ClipB", "ClipC"],
            "vector": pa.array([v.tolist() for v in vecs], type=pa.list_(pa.float32())),
        }
    )
    path = tmp_path / "v.parquet"
    pq.write_table(table, path)

    rows = [
        parse_record(n, rec, dimensions=dims, storage="vector") for n, rec in read_records(path)
    ]
    assert [r.line for r in rows] == [1, 2, 3, 4, 5]
    assert [r.clip_id for r in rows] == [ids[0], None, ids[1], None, ids[2]]
    assert [r.twitch_clip_id for r in rows] == [None, "ClipA", None, "ClipB", None]
    for row, vec in zip(rows, vecs, strict=True):
        assert row.vector.dtype == np.float32
        np.testing.assert_array_equal(row.vector, vec)  # float32 in, the same float32 out


def test_parquet_with_float64_lists_and_bad_rows(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "twitch_clip_id": ["A", "B", "C", "D"],
            "vector": pa.array(
                [[0.1, 0.2, 0.3], None, [0.0, 0.0, 0.0], [1.0, 2.0]], type=pa.list_(pa.float64())
            ),
        }
    )
    path = tmp_path / "v.PARQUET"
    pq.write_table(table, path)
    out = list(read_records(path))
    assert [n for n, _ in out] == [1, 2, 3, 4]
    good = parse_record(1, out[0][1], dimensions=3, storage="halfvec")
    np.testing.assert_array_equal(good.vector, np.asarray([0.1, 0.2, 0.3], dtype=np.float32))
    reasons = []
    for n, rec in out[1:]:
        with pytest.raises(ValueError) as caught:
            parse_record(n, rec, dimensions=3, storage="halfvec")
        reasons.append(str(caught.value))
    assert reasons[0] == "'vector' must be a list of numbers"
    assert "all zeros" in reasons[1]
    assert reasons[2] == "the vector has 2 dimensions, the space 3"


def test_parquet_rows_are_numbered_across_batches(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = vectors.CHUNK * 2 + 37
    table = pa.table(
        {
            "twitch_clip_id": [f"C{i}" for i in range(n)],
            "vector": pa.array([[float(i + 1)] for i in range(n)], type=pa.list_(pa.float32())),
        }
    )
    path = tmp_path / "v.parquet"
    pq.write_table(table, path, row_group_size=700)
    out = list(read_records(path))
    assert [k for k, _ in out] == list(range(1, n + 1))
    assert all(rec["twitch_clip_id"] == f"C{k - 1}" for k, rec in out)
    assert all(rec["vector"] == [float(k)] for k, rec in out)


def test_a_file_named_parquet_that_is_not_is_a_vector_file_error(tmp_path: Path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "v.parquet"
    path.write_text('{"twitch_clip_id": "x", "vector": [1]}\n', encoding="utf-8")
    with pytest.raises(VectorFileError, match="not a readable Parquet file"):
        list(read_records(path))


# --- the report ----------------------------------------------------------------------------


def test_the_report_counts_every_bad_row_and_keeps_the_first_ones():
    report = ImportReport("small")
    for line in range(1, MAX_REPORTED + 6):
        report.reject(line, f"reason {line}")
    assert report.bad_count == MAX_REPORTED + 5
    assert len(report.bad) == MAX_REPORTED and report.bad[-1] == (MAX_REPORTED, "reason 1000")
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["bad"][0] == {"line": 1, "reason": "reason 1"}
    assert data["space"] == "small" and data["bad_count"] == MAX_REPORTED + 5
    assert {k for k in data if k != "bad"} == {
        "space",
        "read",
        "imported",
        "superseded",
        "duplicates",
        "bad_count",
        "index_rebuilt",
    }
