"""The import's line parser: every bad line gets a reason, every good line a record (no I/O)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import clips
from clipembed.bulk import importer
from tests.plugins.jobs import clip_record


def parse(line: str | bytes) -> importer.ClipRecord | str | None:
    return importer.parse_line(line)


def test_real_format_line_parses_with_every_column():
    record = parse(
        json.dumps(
            clip_record(
                1,
                title="貰ったガチャでSRを出したとと 🎉",
                creator_id=573724715,  # ids may come as numbers
                game_id=None,
                game_name=None,
                duration=59.9,
                view_count=8475,
                created_at="2024-01-18T15:18:31Z",
            ),
            ensure_ascii=False,
        ).encode()
    )
    assert isinstance(record, importer.ClipRecord)
    assert record.title == "貰ったガチャでSRを出したとと 🎉"
    assert record.creator_id == "573724715"
    assert record.created_at == dt.datetime(2024, 1, 18, 15, 18, 31, tzinfo=dt.UTC)
    assert record.game_name is None and record.is_removed is False


def test_naive_timestamps_are_utc():
    record = parse(json.dumps(clip_record(1, created_at="2024-01-18T15:18:31")))
    assert isinstance(record, importer.ClipRecord)
    assert record.created_at.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"a string"', "not a JSON object"),
        (json.dumps({k: v for k, v in clip_record(1).items() if k != "title"}), "title"),
        (json.dumps(clip_record(1, title="x" * 256)), "title"),
        (json.dumps(clip_record(1, broadcaster_name="")), "broadcaster_name"),
        (json.dumps(clip_record(1, broadcaster_name=" \u200b ")), "must not be blank"),
        (json.dumps(clip_record(1, twitch_clip_id="")), "twitch_clip_id"),
        (json.dumps(clip_record(1, created_at="yesterday")), "created_at"),
        (json.dumps(clip_record(1, view_count="many")), "view_count"),
        (json.dumps(clip_record(1, view_count=2**31)), "view_count"),
        (json.dumps(clip_record(1, view_count=-1)), "view_count"),
        (json.dumps(clip_record(1, vote_score=-(2**40))), "vote_score"),
        (json.dumps(clip_record(1, duration=-3)), "duration"),
        (json.dumps(clip_record(1)).replace('"Clip1"', "NaN", 1), "twitch_clip_id"),
        (json.dumps(clip_record(1, duration=float("nan"))), "duration"),
        (json.dumps(clip_record(1, duration=float("inf"))), "duration"),
        (json.dumps(clip_record(1, language="x" * 11)), "language"),
        # a lone surrogate is valid JSON but can never be stored as UTF-8
        (json.dumps(clip_record(1, title="\ud800 broken")), "unpaired surrogate"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_bad_lines_have_a_reason_naming_the_problem(line, reason):
    result = parse(line)
    assert isinstance(result, str), result
    assert reason in result


def test_invalid_utf8_is_a_bad_line_not_a_replacement_character():
    line = json.dumps(clip_record(1)).encode().replace(b"clutch", b"cl\xffutch")
    result = parse(line)
    assert isinstance(result, str) and "UTF-8" in result


def test_nul_is_stripped_rather_than_rejected():
    record = parse(json.dumps(clip_record(1, title="a\x00b")))
    assert isinstance(record, importer.ClipRecord) and record.title == "ab"


def test_blank_lines_are_skipped_and_numbers_are_file_lines():
    lines = [json.dumps(clip_record(1)), "", "  ", "oops", json.dumps(clip_record(2))]
    parsed = list(importer.parse_lines(lines))
    assert [n for n, _ in parsed] == [1, 4, 5]
    assert isinstance(parsed[1][1], str)


def test_unknown_columns_are_ignored():
    record = parse(json.dumps(clip_record(1, search_vector="x", embedding=[1, 2])))
    assert isinstance(record, importer.ClipRecord)


@given(st.text(max_size=300))
def test_any_line_is_a_record_a_reason_or_blank_never_an_exception(text):
    result = parse(text)
    assert result is None or isinstance(result, (str, importer.ClipRecord))


@given(
    title=st.text(max_size=255),
    broadcaster=st.text(min_size=1, max_size=100),
    views=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_valid_records_round_trip_through_json(title, broadcaster, views):
    line = json.dumps(clip_record(1, title=title, broadcaster_name=broadcaster, view_count=views))
    result = parse(line)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in title + broadcaster) or not clips.sanitize(
        broadcaster
    ):
        assert isinstance(result, str)
        return
    assert isinstance(result, importer.ClipRecord)
    assert result.title == title.replace("\x00", "")
    assert result.view_count == views


def test_upsert_names_every_column_and_keeps_unchanged_rows():
    text = importer.UPSERT.as_string(None)
    for column in importer.COLUMNS:
        assert f'"{column}"' in text
    assert "ON CONFLICT (twitch_clip_id)" in text and "IS DISTINCT FROM" in text
