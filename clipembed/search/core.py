"""The ranking's parts: a corpus, its parameters, the BM25 keyword and HNSW vector branches.

The page (both branches, fused by RRF) is :mod:`clipembed.search.ranking`.

Nothing here knows about clips. A :class:`Corpus` names a documents table (``id``,
``search_vector``, an embedding column), its postings and document-length tables, the field
weights of its tsvector classes, and how to turn filters into SQL. The same code ranks the
``clips`` table and a BEIR benchmark loaded into tables of its own, so the quality measured on
public data is the quality of the product.

Correctness rules:
- User text never reaches the tsquery parser: lexemes come from ``to_tsvector('english', q)``
  (stemming, stop words), then OR semantics over the postings — quotes, ``&|!:*()``, SQL
  fragments and emoji are just text.
- Filters are applied inside each branch (the keyword branch ranks filtered documents; the
  vector branch filters in the same ``WHERE`` with pgvector's iterative index scans, so a rare
  filter value still fills the page), never after fusion.
- Pagination is stable: each branch returns its top ``window`` (ties broken by id), the fusion
  is deterministic, and a page is a slice of that fixed list.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql

from clipembed.search import bm25, filtered, fusion, queries, statistics

Mode = Literal["hybrid", "keyword", "semantic"]
MODES: tuple[Mode, ...] = ("hybrid", "keyword", "semantic")


def parse_mode(value: str) -> Mode:
    """``value`` as a search mode; ValueError with the one message every caller shows."""
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError(f"unknown mode {value!r}: use hybrid, keyword or semantic")


DEFAULT_WINDOW = 200  # candidates per branch; offset + limit must fit in it
#: HNSW candidates per scan. At a million clips, recall@10 (ann-benchmarks' tie-aware count)
#: was 0.915 at 100 and 0.965 at 200 (docs/benchmarks.md); a hybrid window of 200 then fits
#: one pass instead of an iterative scan.
DEFAULT_EF_SEARCH = 200
#: Lists an IVFFlat index scans in semantic mode (and for similar clips): with a list per 1,000
#: rows, 1 % of a million clips. At a million, recall@10 0.962-0.9745 (two builds), 0.945 at 5
#: (docs/notes/index-kinds.md).
DEFAULT_PROBES = 10
#: ... and in hybrid mode, where the keyword branch's candidates the vector branch missed are
#: ranked by their exact similarity before fusion (``ranking.completed``): the vector branch
#: may be shallower, and its CPU is what the keyword branch competes with on a small machine.
HYBRID_PROBES = 3
#: The keyword branch ranks the best ``n * OVERFETCH + OVERFETCH_MIN`` documents before the
#: filters, and everything only when the filters leave fewer than ``n`` of them.
OVERFETCH = 2
OVERFETCH_MIN = 100


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A searchable table. Identifiers are composed with psycopg.sql, never formatted."""

    table: str
    postings: str
    doclen: str
    #: the schema of the three tables (None: the connection's search_path, as for ``clips``)
    schema: str | None = None
    embedding_column: str = "embedding"
    #: weight of each tsvector class (A, B, C, D) in term frequency and document length
    field_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    #: SQL always applied to documents (alias ``d``), e.g. ``NOT d.is_removed``
    base_filter: str = "TRUE"
    #: the text-search configurations a query is analysed under (lexemes OR-ed, deduplicated)
    query_configs: tuple[str, ...] = ("english",)
    #: vectors kept in a table of their own (an embedding space: ``clip_id``, ``embedding``)
    #: instead of ``embedding_column``; ``vector_type`` is its column's type
    vectors: str | None = None
    vector_type: str = "vector"

    def ident(self, name: str) -> sql.Identifier:
        """``name`` as an identifier, qualified with the corpus's schema when it has one."""
        return sql.Identifier(self.schema, name) if self.schema else sql.Identifier(name)


@dataclasses.dataclass(frozen=True)
class Params:
    mode: Mode = "hybrid"
    limit: int = 20
    offset: int = 0
    window: int = DEFAULT_WINDOW
    k1: float = bm25.K1
    b: float = bm25.B
    ef_search: int = DEFAULT_EF_SEARCH
    probes: int | None = None  # lists an IVFFlat index scans; None: by mode (:func:`probes_for`)
    rrf_k: int = fusion.RRF_K
    # BM25 is the stronger branch on entity-heavy short text; measured in docs/benchmarks.md
    keyword_weight: float = 1.3
    semantic_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Hit:
    id: Any
    rank: int  # 1-based, across pages
    score: float  # RRF score (hybrid), BM25 (keyword) or cosine similarity (semantic)
    keyword_rank: int | None = None
    keyword_score: float | None = None
    semantic_rank: int | None = None
    semantic_score: float | None = None  # cosine similarity, 1 - distance


Where = tuple[sql.Composable, dict[str, Any]]

# by database, like search.statistics' caches: one process may search several
_vector_version: dict[str, tuple[int, ...]] = {}


def no_filters() -> Where:
    return sql.SQL("TRUE"), {}


def clear_stats_cache() -> None:
    statistics.clear()
    filtered.forget()


async def keyword_branch(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    query: str,
    where: Where,
    params: Params,
    n: int,
    *,
    filter_first: bool = False,
) -> list[tuple[Any, float]]:
    """Top ``n`` (id, BM25) for ``query`` among documents matching ``where``.

    ``filter_first``: ``where`` keeps few documents (see KEYWORD_FILTER_FIRST); same result.
    Otherwise the best ``n * OVERFETCH + OVERFETCH_MIN`` documents are ranked before the
    filters apply (a top-N heapsort, not a sort of every match), and only when the filters
    leave fewer than ``n`` of a list that was cut is it ranked again in full: the same result.
    """
    n_docs, avgdl = await statistics.corpus_stats(conn, corpus)
    if n_docs == 0:
        return []
    frequencies = await statistics.document_frequencies(conn, corpus, query, n_docs)
    if not frequencies:
        return []
    stmt = (queries.KEYWORD_FILTER_FIRST if filter_first else queries.KEYWORD).format(
        postings=corpus.ident(corpus.postings),
        table=corpus.ident(corpus.table),
        base=sql.SQL(corpus.base_filter),
        where=where[0],
    )
    folded = bm25.folded(corpus.field_weights, k1=params.k1, b=params.b, avgdl=avgdl or 1.0)
    args = {
        "lexemes": list(frequencies),
        "weights": [bm25.idf(int(n_docs), df) * folded.k1_plus_1 for df in frequencies.values()],
        **folded.statement_params(),
        "n_results": n,
        **where[1],
    }
    depth = None if filter_first else n * OVERFETCH + OVERFETCH_MIN
    cur = await conn.execute(stmt, args | {"depth": depth})
    rows = await cur.fetchall()
    if depth is not None and len(rows) < n and (not rows or rows[0][2] >= depth):
        cur = await conn.execute(stmt, args | {"depth": None})
        rows = await cur.fetchall()
    await conn.commit()
    # the LIMIT took the first rows of a score-ordered scan; make the order explicit
    ranked = sorted(((r[0], float(r[1])) for r in rows), key=lambda x: (-x[1], str(x[0])))
    return ranked


async def _pgvector_version(conn: psycopg.AsyncConnection[Any]) -> tuple[int, ...]:
    key = statistics.database_key(conn)
    if key not in _vector_version:
        cur = await conn.execute(queries.PGVECTOR_VERSION)
        row = await cur.fetchone()
        parts = (row[0] if row else "0").split(".")
        _vector_version[key] = tuple(int(p) for p in parts if p.isdigit())
    return _vector_version[key]


def probes_for(params: Params) -> int:
    """The IVFFlat probes a search uses: the ones asked for, else by mode (pure)."""
    if params.probes is not None:
        return max(params.probes, 1)
    return HYBRID_PROBES if params.mode == "hybrid" else DEFAULT_PROBES


async def semantic_branch(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    vector: np.ndarray,
    where: Where,
    params: Params,
    n: int,
    *,
    exclude_id: Any = None,
    selective: bool = False,
    keys: Where | None = None,
) -> list[tuple[Any, float]]:
    """Top ``n`` (id, cosine similarity) by HNSW among documents matching ``where``.

    ``selective``: the filters may keep few documents; when they keep at most
    ``filtered.EXACT_MAX``, those
    are ranked exactly (one statement), otherwise by the index as without it (a second one).
    ``keys``: those of the filters that the vectors' own table can test (alias ``e``; a space's
    game and broadcaster keys), tested there first; ``where`` still applies to every hit.
    """
    exclude = sql.SQL("d.id <> %(exclude)s") if exclude_id is not None else sql.SQL("TRUE")
    if corpus.vectors is None:
        keys = None
    if selective:
        exact = await filtered.exact(
            conn,
            corpus,
            vector,
            where,
            n,
            exclude,
            exclude_id,
            database=statistics.database_key(conn),
            keys=keys,
        )
        if exact is not None:
            return exact
    version = await _pgvector_version(conn)
    if corpus.vectors is not None:
        stmt = queries.SEMANTIC_JOINED.format(
            vectors=corpus.ident(corpus.vectors),
            vtype=sql.SQL("halfvec" if corpus.vector_type == "halfvec" else "vector"),
            keys=keys[0] if keys is not None else sql.SQL("TRUE"),
            table=corpus.ident(corpus.table),
            base=sql.SQL(corpus.base_filter),
            where=where[0],
            exclude=exclude,
        )
    else:
        stmt = queries.SEMANTIC.format(
            emb=sql.Identifier(corpus.embedding_column),
            table=corpus.ident(corpus.table),
            base=sql.SQL(corpus.base_filter),
            where=where[0],
            exclude=exclude,
        )
    fetch = n
    async with conn.transaction():
        ef, probes = str(max(params.ef_search, 1)), str(probes_for(params))
        if version >= (0, 8) and selective:
            # a filter keeping a small share: the relaxed scan returns the first matches it
            # meets, so it is asked for more and may walk further before they are cut to n
            fetch = max(n, filtered.MIN_FETCH)
            await conn.execute(
                queries.SET_EF_SEARCH_ITERATIVE_FILTERED,
                (ef, probes, str(filtered.MAX_SCAN_TUPLES), str(filtered.MAX_PROBES)),
            )
        elif version >= (0, 8):
            # keep scanning the index until enough rows pass the filters (pgvector >= 0.8)
            await conn.execute(queries.SET_EF_SEARCH_ITERATIVE, (ef, probes))
        else:
            await conn.execute(queries.SET_EF_SEARCH, (ef, probes))
        cur = await conn.execute(
            stmt,
            {
                "v": np.asarray(vector, dtype=np.float32),
                "n_results": fetch,
                "exclude": exclude_id,
                **where[1],
                **(keys[1] if keys is not None else {}),
            },
        )
        rows = await cur.fetchall()
    return [(r[0], 1.0 - float(r[1])) for r in rows[:n]]


async def similarities(
    conn: psycopg.AsyncConnection[Any], corpus: Corpus, vector: np.ndarray, ids: list[Any]
) -> list[tuple[Any, float]]:
    """(id, cosine similarity) of the given documents that have a vector, computed exactly:
    one statement of primary-key lookups (:data:`queries.DISTANCES`). The caller has already
    applied the filters (the ids are the keyword branch's)."""
    if not ids:
        return []
    if corpus.vectors is not None:
        stmt = queries.DISTANCES_JOINED.format(
            vectors=corpus.ident(corpus.vectors),
            vtype=sql.SQL("halfvec" if corpus.vector_type == "halfvec" else "vector"),
        )
    else:
        stmt = queries.DISTANCES.format(
            emb=sql.Identifier(corpus.embedding_column), table=corpus.ident(corpus.table)
        )
    cur = await conn.execute(stmt, {"v": np.asarray(vector, dtype=np.float32), "ids": ids})
    rows = await cur.fetchall()
    await conn.commit()
    return [(r[0], 1.0 - float(r[1])) for r in rows]
