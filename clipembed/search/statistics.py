"""BM25's corpus statistics: N, the average document length, and each query lexeme's
document frequency, counted by the database and cached for a short while.

Why a cache for document frequencies: at a million clips a common lexeme's count is an
index-only scan of its postings ("chat", in 85,450 clips: ~19 ms), paid by every query that
contains it before the ranking reads the same postings again, and common lexemes are exactly
the ones many queries share. Rare lexemes are counted with the query's analysis, in the same
statement, as before: counting them costs less than a cache lookup would save. Frequencies,
like N and avgdl, may be up to STATS_TTL seconds old; BM25's idf moves little in that time, and
nothing is cached for a database's first documents (an empty corpus), so they are found at once.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from clipembed.search import queries

if TYPE_CHECKING:
    from clipembed.search.core import Corpus

STATS_TTL = 60.0  # seconds: N and avgdl move slowly; recomputing them per query costs ~10 ms
#: A query lexeme in more than this share of the documents is dropped when rarer ones remain
#: (the keyword branch's cost bound; docs/notes/search.md). Not applied below COMMON_MIN_POSTINGS.
COMMON_FRACTION = 0.2
COMMON_MIN_POSTINGS = 5_000
#: The query's analysis counts each lexeme's postings up to this many; a lexeme that reaches it
#: is common, and its count comes from the cache or from one more statement.
PROBE_CAP = 1_000
#: Common lexemes' counts kept per process (per database and postings table); past it the
#: oldest entry goes.
CACHE_SIZE = 20_000

# Keyed by database as well as table: one process may search several databases (the tests, the
# benchmark), and statistics from one must never be used for another.
_stats_cache: dict[tuple[str, str, tuple[float, ...]], tuple[float, float, float]] = {}


def database_key(conn: psycopg.AsyncConnection[Any]) -> str:
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


async def corpus_stats(conn: psycopg.AsyncConnection[Any], corpus: Corpus) -> tuple[float, float]:
    """(N, avgdl) for BM25, cached for STATS_TTL seconds per database, corpus and weights."""
    key = (database_key(conn), corpus.doclen, corpus.field_weights)
    cached = _stats_cache.get(key)
    now = time.monotonic()
    if cached and now - cached[2] < STATS_TTL:
        return cached[0], cached[1]
    wa, wb, wc, wd = corpus.field_weights
    query = queries.CORPUS_STATS.format(
        wa=sql.Literal(wa),
        wb=sql.Literal(wb),
        wc=sql.Literal(wc),
        wd=sql.Literal(wd),
        t=corpus.ident(corpus.doclen),
    )
    cur = await conn.execute(query)
    n, avgdl = await cur.fetchone() or (0, 0)
    if n:  # an empty corpus is not cached: the first documents must be searchable at once
        _stats_cache[key] = (float(n), float(avgdl), now)
    return float(n), float(avgdl)


@dataclasses.dataclass
class FrequencyCache:
    """Common lexemes' document frequencies, each exact or known only to reach a cap (pure).

    An entry counted up to a cap that it reached says "at least that many": it still answers
    for any cap up to its count (the lexeme is very common either way), not for a higher one.
    """

    ttl: float = STATS_TTL
    size: int = CACHE_SIZE
    entries: dict[tuple[str, str], tuple[int, bool, float]] = dataclasses.field(
        default_factory=dict
    )

    def get(self, table: str, lexeme: str, cap: int, now: float) -> tuple[int, bool] | None:
        """(count, exact) when a fresh entry answers for ``cap``."""
        entry = self.entries.get((table, lexeme))
        if entry is None or now - entry[2] >= self.ttl:
            return None
        count, exact, _ = entry
        return (count, exact) if exact or count >= cap else None

    def put(self, table: str, lexeme: str, count: int, exact: bool, now: float) -> None:
        key = (table, lexeme)
        self.entries.pop(key, None)
        if len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]  # the oldest (dicts keep insertion order)
        self.entries[key] = (count, exact, now)


_frequencies = FrequencyCache()


def clear() -> None:
    """Forget every cached statistic (tests, evaluations that reload a corpus)."""
    _stats_cache.clear()
    _frequencies.entries.clear()


async def document_frequencies(
    conn: psycopg.AsyncConnection[Any], corpus: Corpus, query: str, n_docs: float
) -> dict[str, int]:
    """The query's lexemes that the ranking uses, with their document frequencies.

    One statement analyses the query and counts each lexeme's postings up to PROBE_CAP. A
    lexeme that reaches it is counted up to the very-common cap (or exactly, when the ranking
    keeps it) by one more statement unless the cache knows it. Lexemes no document has are left
    out, and so are very common ones while a rarer one remains (:func:`without_very_common`).
    """
    cap = max(COMMON_MIN_POSTINGS, int(n_docs * COMMON_FRACTION))
    postings = corpus.ident(corpus.postings)
    table = f"{database_key(conn)}/{corpus.schema or ''}.{corpus.postings}"
    cur = await conn.execute(
        queries.LEXEMES.format(postings=postings),
        {"q": query, "configs": list(corpus.query_configs), "cap": PROBE_CAP},
    )
    counts = {r[0]: int(r[1]) for r in await cur.fetchall() if r[0]}
    exact = {x for x, c in counts.items() if c < PROBE_CAP}
    now = time.monotonic()

    def known(lexeme: str, count: int, is_exact: bool, *, counted: bool = False) -> None:
        counts[lexeme] = count
        if is_exact:
            exact.add(lexeme)
        if counted:  # by the database just now: cached for the next queries
            _frequencies.put(table, lexeme, count, is_exact, now)

    unknown = []
    for lexeme in [x for x in counts if x not in exact]:
        hit = _frequencies.get(table, lexeme, cap, now)
        if hit is None:
            unknown.append(lexeme)
        else:
            known(lexeme, *hit)
    for lexeme, count in (await _count(conn, postings, unknown, cap)).items():
        known(lexeme, count, count < cap, counted=True)
    kept = without_very_common(counts, cap, n_docs)
    # a kept lexeme past the cap (a query made only of very common words) is counted exactly
    for lexeme, count in (
        await _count(conn, postings, [x for x in kept if x not in exact])
    ).items():
        known(lexeme, count, True, counted=True)
    # a cached count may exceed a corpus that shrank since: df <= N keeps idf positive
    return {x: min(counts[x], max(int(n_docs), 1)) for x in kept}


async def _count(
    conn: psycopg.AsyncConnection[Any],
    postings: sql.Identifier,
    lexemes: list[str],
    cap: int | None = None,
) -> dict[str, int]:
    """``lexemes``' postings counted up to ``cap`` (None: all), in one statement."""
    if not lexemes:
        return {}
    cur = await conn.execute(
        queries.LEXEME_COUNTS.format(postings=postings), {"lexemes": lexemes, "cap": cap}
    )
    return {lexeme: int(count) for lexeme, count in await cur.fetchall()}


def without_very_common(counts: dict[str, int], cap: int, n_docs: float) -> list[str]:
    """The lexemes some document has, minus those in ``cap`` or more documents (more than
    COMMON_FRACTION of them) as long as a rarer one remains: the cost bound for very common
    terms (pure; ``counts`` are the probe's, capped at ``cap``).

    Ranking a lexeme reads all of its postings; one in half a million clips costs far more than
    the rest of the query together and, with an IDF near ln 2, moves the ranking little. A query
    made only of very common terms keeps them all (MAX_QUERY_CHARS bounds it).
    """
    present = [x for x, c in counts.items() if c > 0]
    if cap >= n_docs:
        return present
    # a variant no document has (another language's stem of the same word) is no rarer term
    rarer = [x for x in present if counts[x] < cap]
    return rarer or present
