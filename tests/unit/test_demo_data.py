"""The demo's clip generator: deterministic, importable, and as varied as real clips."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata

from clipembed import demo_data
from clipembed.bulk import importer

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_same_seed_same_clips_other_seed_other_clips():
    assert list(demo_data.generate(200, seed=3)) == list(demo_data.generate(200, seed=3))
    assert list(demo_data.generate(50, seed=3)) != list(demo_data.generate(50, seed=4))


def test_every_clip_passes_the_importer_and_ids_are_unique():
    records = list(demo_data.generate(3000))
    ids = set()
    for r in records:
        parsed = importer.parse_line(json.dumps(r, ensure_ascii=False).encode())
        assert isinstance(parsed, importer.ClipRecord), parsed
        ids.add(parsed.twitch_clip_id)
    assert len(ids) == 3000


def test_languages_scripts_and_emoji_like_real_clips():
    records = list(demo_data.generate(3000))
    languages = {r["language"] for r in records}
    assert {"en", "ja", "ko"} <= languages
    titles = " ".join(r["title"] for r in records)
    assert any(
        "CJK" in unicodedata.name(c, "") or "HIRAGANA" in unicodedata.name(c, "") for c in titles
    )
    assert any("HANGUL" in unicodedata.name(c, "") for c in titles)
    assert any(unicodedata.category(c) == "So" for c in titles)  # emoji
    games = {r["game_name"] for r in records}
    assert "VALORANT" in games and None in games  # some clips have no game, as in real exports
    assert len({r["broadcaster_name"] for r in records}) >= 50
    assert any(r["creator_name"] == r["broadcaster_name"] for r in records)


def test_dates_lie_in_the_60_days_before_now():
    for r in demo_data.generate(500, now=NOW):
        created = dt.datetime.fromisoformat(r["created_at"].replace("Z", "+00:00"))
        assert NOW - dt.timedelta(days=60) <= created <= NOW
