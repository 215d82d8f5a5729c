"""Which languages a query is analysed in, and how much an English-only model may say about it.

The keyword analysis itself runs in PostgreSQL (``clipembed_tsvector``, migration 0005): NFKC,
CJK runs as character bigrams, other words by the snowball configuration of the clip's
language. A query's language is unknown, so it is analysed under every configuration a clip
can be indexed with (:data:`QUERY_CONFIGS`) and the distinct lexemes are OR-ed: a Spanish title
indexed as ``jug`` is found by ``jugar``, and an English document by ``running`` as before.

Fusion: the bundled model (all-MiniLM-L6-v2) knows English only. For a query written mostly in
CJK script its nearest neighbours are noise, and at equal weight in RRF they push exact keyword
matches down the page (measured: docs/benchmarks.md, "Languages"). When the configured model is
not multilingual, such a query's semantic branch keeps only :data:`CJK_SEMANTIC_WEIGHT` of its
weight: keyword matches lead, semantic results still fill a page the keywords cannot.
"""

from __future__ import annotations

import dataclasses
import unicodedata

from clipembed.search import core

#: Every snowball configuration ``clipembed_language_config`` maps a clip language to.
QUERY_CONFIGS: tuple[str, ...] = (
    "english",
    "spanish",
    "german",
    "portuguese",
    "russian",
    "french",
    "italian",
    "dutch",
    "swedish",
    "norwegian",
    "danish",
    "finnish",
    "turkish",
    "hungarian",
    "romanian",
    "greek",
    "arabic",
    "indonesian",
    "catalan",
    "lithuanian",
    "hindi",
)

#: A query counts as CJK when at least this share of its letters is Han, kana or Hangul.
CJK_QUERY_SHARE = 0.5
#: The semantic branch's share of its weight for a CJK query and an English-only model.
CJK_SEMANTIC_WEIGHT = 0.15

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3130, 0x318F),  # Hangul compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width katakana
)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def cjk_share(text: str) -> float:
    """The share of the text's letters (Unicode category L*) that are CJK; 0 without letters."""
    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    if not letters:
        return 0.0
    return sum(1 for c in letters if is_cjk(c)) / len(letters)


def is_cjk_query(text: str) -> bool:
    return cjk_share(text) >= CJK_QUERY_SHARE


def fusion_for(query: str, params: core.Params, *, multilingual: bool) -> core.Params:
    """The query's fusion weights: the semantic branch mostly muted for CJK on an English model."""
    if multilingual or params.mode != "hybrid" or not is_cjk_query(query):
        return params
    return dataclasses.replace(params, semantic_weight=params.semantic_weight * CJK_SEMANTIC_WEIGHT)
