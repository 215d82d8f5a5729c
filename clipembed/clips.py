"""A clip's embedding text and its content hash: pure functions, no I/O.

The text format is the original system's, exactly (SPEC): parts joined with ``". "``::

    Title: Insane clutch!. Broadcaster: s1mple. Clipped by: testmod. Game: Counter-Strike 2

Every field is sanitised first (Unicode NFC, control characters removed, whitespace collapsed)
so that invisible differences neither change the embedding nor defeat the cache.

The *content hash* identifies what an embedding was computed from: the text, the model and the
dimensions. A stored embedding whose hash differs from the one the clip's current text and the
current configuration give is stale, and is re-embedded.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

# Cc (controls) and Cf (format: zero-width joiners, bidi overrides...) are removed, except
# that control whitespace (tab, newline...) becomes a space. Cf includes ZWJ, which joins
# emoji sequences; we keep ZWJ (U+200D) and variation selectors so emoji survive intact.
_KEEP_FORMAT = {"\u200d", "\ufe0f", "\ufe0e"}
_WHITESPACE = re.compile(r"\s+")


def sanitize(text: str | None) -> str:
    """Normalise one field: NFC, no control characters, single spaces, trimmed."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text)
    if text.isprintable():
        # the common case, ~10x faster: no control, format or private-use character, and
        # U+0020 is the only whitespace a printable string can hold (the loop would keep it all)
        return _WHITESPACE.sub(" ", text).strip()
    out = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc" or (cat in ("Cf", "Cs", "Co", "Cn") and ch not in _KEEP_FORMAT):
            continue
        out.append(ch)
    return _WHITESPACE.sub(" ", "".join(out)).strip()


@dataclass(frozen=True, slots=True)
class ClipText:
    """The four fields an embedding is computed from."""

    title: str
    broadcaster_name: str
    creator_name: str | None = None
    game_name: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ClipText:
        """Build from a mapping or an object with the clips column names."""
        get = row.get if hasattr(row, "get") else lambda k: getattr(row, k, None)
        return cls(
            title=get("title") or "",
            broadcaster_name=get("broadcaster_name") or "",
            creator_name=get("creator_name"),
            game_name=get("game_name"),
        )


def embedding_text(clip: ClipText) -> str:
    """The original's text for a clip, built from sanitised fields."""
    title = sanitize(clip.title)
    broadcaster = sanitize(clip.broadcaster_name)
    creator = sanitize(clip.creator_name)
    game = sanitize(clip.game_name)
    parts = [f"Title: {title}", f"Broadcaster: {broadcaster}"]
    if creator and creator != broadcaster:
        parts.append(f"Clipped by: {creator}")
    if game:
        parts.append(f"Game: {game}")
    return ". ".join(parts)


def cache_digest(model: str, text: str) -> str:
    """Hex SHA-256 of ``model + ":" + text``: the original's cache key body."""
    return hashlib.sha256(f"{model}:{text}".encode()).hexdigest()


def content_hash(text: str, model: str, dimensions: int) -> bytes:
    """32-byte digest of what an embedding depends on: text, model and dimensions.

    Stored beside each embedding (``clips.embedding_content_hash``); comparing it with the
    hash of the current text tells a current embedding from a stale one without a provider call.
    """
    return hashlib.sha256(f"{model}\x00{dimensions}\x00{text}".encode()).digest()
