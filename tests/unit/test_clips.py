from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipembed import clips
from clipembed.clips import ClipText, embedding_text


def test_spec_example_exactly():
    clip = ClipText("Insane clutch!", "s1mple", "testmod", "Counter-Strike 2")
    assert (
        embedding_text(clip)
        == "Title: Insane clutch!. Broadcaster: s1mple. Clipped by: testmod. Game: Counter-Strike 2"
    )


@pytest.mark.parametrize(
    ("clip", "expected"),
    [
        (ClipText("t", "b", "b", "g"), "Title: t. Broadcaster: b. Game: g"),
        (ClipText("t", "b", None, None), "Title: t. Broadcaster: b"),
        (ClipText("t", "b", "", ""), "Title: t. Broadcaster: b"),
        (ClipText("t", "b", "c", None), "Title: t. Broadcaster: b. Clipped by: c"),
        # creator equal to broadcaster after sanitising counts as equal
        (ClipText("t", "b", " b\u200b", None), "Title: t. Broadcaster: b"),
        (
            ClipText("日本語のタイトル 🎉", "配信者", "작성자", None),
            "Title: 日本語のタイトル 🎉. Broadcaster: 配信者. Clipped by: 작성자",
        ),
    ],
)
def test_text_table(clip, expected):
    assert embedding_text(clip) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  a   b  ", "a b"),
        ("a\nb\tc\r\n", "a b c"),
        ("a\x00b\x07c", "abc"),
        ("e\u0301", "\u00e9"),  # NFC
        ("zero\u200bwidth", "zerowidth"),
        ("bidi\u202eevil", "bidievil"),
        ("👩\u200d💻 ok", "👩\u200d💻 ok"),  # ZWJ emoji sequence survives
        ("", ""),
        (None, ""),
    ],
)
def test_sanitize_table(raw, expected):
    assert clips.sanitize(raw) == expected


@given(st.text())
def test_sanitize_properties(raw):
    out = clips.sanitize(raw)
    assert out == out.strip()
    assert "  " not in out
    assert unicodedata.is_normalized("NFC", out)
    assert not any(unicodedata.category(c) == "Cc" for c in out)
    assert clips.sanitize(out) == out  # idempotent


def test_cache_digest_is_spec_key_body():
    import hashlib

    assert clips.cache_digest("m", "t") == hashlib.sha256(b"m:t").hexdigest()


def test_content_hash_depends_on_text_model_and_dimensions():
    base = clips.content_hash("t", "m", 768)
    assert len(base) == 32
    assert base == clips.content_hash("t", "m", 768)
    assert base != clips.content_hash("t2", "m", 768)
    assert base != clips.content_hash("t", "m2", 768)
    assert base != clips.content_hash("t", "m", 384)


@given(st.text(max_size=200))
def test_the_fast_path_of_sanitize_equals_the_character_loop(text):
    import re

    normal = unicodedata.normalize("NFC", text)
    out = []
    for ch in normal:
        if ch.isspace():
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc" or (cat in ("Cf", "Cs", "Co", "Cn") and ch not in clips._KEEP_FORMAT):
            continue
        out.append(ch)
    assert clips.sanitize(text) == re.sub(r"\s+", " ", "".join(out)).strip()
