"""The vector branch under a selective filter (one game, one broadcaster): rank exactly or widen
the index scan.

HNSW with a filter visits the graph near the query and keeps what passes; a filter that keeps a
small share of the clips, far from the query, is found late or not at all (recall@10 0.35 for
one game at a million clips). So:

- a filter that keeps at most :data:`EXACT_MAX` clips is ranked by exact distance, in one
  statement (:data:`queries.SEMANTIC_EXACT`, tested against numpy's distances); a game or a
  broadcaster, which a space's own columns hold (``keys``, migration 0014), up to
  :data:`EXACT_MAX_KEYED` (:data:`queries.SEMANTIC_EXACT_KEYED`: no join per clip);
- a larger one goes through the index with :data:`MAX_SCAN_TUPLES` and at least
  :data:`MIN_FETCH` matches asked for (``core.semantic_branch``), and is remembered as large
  for :data:`LARGE_SECONDS` so its next searches skip the exact attempt's bounded id scan.

Measured in docs/benchmarks.md, "A million clips, end to end"; ``python -m bench.filtered_scan``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql

from clipembed.search import queries

if TYPE_CHECKING:
    from clipembed.search.core import Corpus, Where

#: A selective filter keeping at most this many documents ranks their vectors exactly.
EXACT_MAX = 10_000
#: The same for a filter the space's own key columns test: each kept clip costs one read of its
#: vector's row and one distance, about what one tuple of a filtered HNSW scan costs, so up to
#: MAX_SCAN_TUPLES the exact ranking is no slower than the scan and it misses nothing.
EXACT_MAX_KEYED = 60_000
#: Beyond twice the results asked for, the nearest keyed clips checked against ``clips``.
PROBE_MARGIN = 50
#: Past EXACT_MAX, the index scan: pgvector's relaxed iterative scan returns the first matches
#: it meets and stops at 20,000 tuples by default. Asking for at least MIN_FETCH and letting it
#: visit up to MAX_SCAN_TUPLES finds the nearer ones (0.33 -> 0.99 for that game, same latency).
MIN_FETCH = 50
MAX_SCAN_TUPLES = 60_000
#: The same bound for an IVFFlat index: lists of about 1,000 rows (space_table.ROWS_PER_LIST).
MAX_PROBES = 60
#: How long a filter found to keep more than EXACT_MAX skips the exact attempt (seconds).
LARGE_SECONDS = 60.0
LARGE_MAX = 4096  # filters remembered at most (then forgotten all at once)

#: (database, table, filter SQL, its values) -> until when (monotonic) the filter is large
_large: dict[tuple[str, str, str, str], float] = {}


def forget() -> None:
    """Forget which filters were large (tests, and a process that changed its data)."""
    _large.clear()


async def exact(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    vector: np.ndarray,
    where: Where,
    n: int,
    exclude: sql.Composable,
    exclude_id: Any,
    *,
    database: str,
    keys: Where | None = None,
) -> list[tuple[Any, float]] | None:
    """The exact top ``n`` (id, cosine similarity) of the filtered documents, or None when they
    are more than EXACT_MAX (EXACT_MAX_KEYED with ``keys``, the filters on the space's own
    columns; then the caller's index scan answers)."""
    key = (database, corpus.table, where[0].as_string(None), repr(where[1]))
    if time.monotonic() < _large.get(key, 0.0):
        return None
    if keys is not None and corpus.vectors is not None:
        rows = await _ranked_by_keys(conn, corpus, vector, where, keys, n, exclude, exclude_id)
    else:
        rows = await _ranked(conn, corpus, vector, where, n, exclude, exclude_id)
    if rows is None:
        if len(_large) >= LARGE_MAX:
            _large.clear()
        _large[key] = time.monotonic() + LARGE_SECONDS
    return rows


async def _ranked(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    vector: np.ndarray,
    where: Where,
    n: int,
    exclude: sql.Composable,
    exclude_id: Any,
) -> list[tuple[Any, float]] | None:
    present: sql.Composable
    if corpus.vectors is not None:
        vtype = sql.SQL("halfvec" if corpus.vector_type == "halfvec" else "vector")
        source = sql.SQL("{vectors} e ON e.clip_id = f.id").format(
            vectors=corpus.ident(corpus.vectors)
        )
        distance = sql.SQL("e.embedding <=> %(v)s::{vtype}").format(vtype=vtype)
        present = sql.SQL("TRUE")
    else:
        emb = sql.Identifier(corpus.embedding_column)
        source = sql.SQL("{table} e ON e.id = f.id").format(table=corpus.ident(corpus.table))
        distance = sql.SQL("e.{emb} <=> %(v)s").format(emb=emb)
        present = sql.SQL("e.{emb} IS NOT NULL").format(emb=emb)
    stmt = queries.SEMANTIC_EXACT.format(
        table=corpus.ident(corpus.table),
        base=sql.SQL(corpus.base_filter),
        where=where[0],
        exclude=exclude,
        source=source,
        distance=distance,
        present=present,
    )
    args = {
        "v": np.asarray(vector, dtype=np.float32),
        "cap": EXACT_MAX,
        "n_results": n,
        "exclude": exclude_id,
        **where[1],
    }
    cur = await conn.execute(stmt, args)
    rows = await cur.fetchall()
    await conn.commit()
    if not rows or rows[0][0] > EXACT_MAX:
        return None
    return [(r[1], 1.0 - float(r[2])) for r in rows if r[1] is not None]


async def _ranked_by_keys(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    vector: np.ndarray,
    where: Where,
    keys: Where,
    n: int,
    exclude: sql.Composable,
    exclude_id: Any,
) -> list[tuple[Any, float]] | None:
    assert corpus.vectors is not None
    stmt = queries.SEMANTIC_EXACT_KEYED.format(
        vectors=corpus.ident(corpus.vectors),
        vtype=sql.SQL("halfvec" if corpus.vector_type == "halfvec" else "vector"),
        keys=keys[0],
        table=corpus.ident(corpus.table),
        base=sql.SQL(corpus.base_filter),
        where=where[0],
        exclude=exclude,
    )
    args = {
        "v": np.asarray(vector, dtype=np.float32),
        "cap": EXACT_MAX_KEYED,
        "probe": probe_for(n),
        "exclude": exclude_id,
        **where[1],
        **keys[1],
    }
    cur = await conn.execute(stmt, args)
    rows = await cur.fetchall()
    await conn.commit()
    kept = int(rows[0][0]) if rows else 0
    if kept > EXACT_MAX_KEYED:
        return None
    passed = [(r[1], 1.0 - float(r[2])) for r in rows if r[1] is not None]
    if len(passed) < n and kept > args["probe"]:
        # the other filters (language, dates, NSFW) turned down most of the nearest: all of them
        cur = await conn.execute(stmt, {**args, "probe": kept})
        rows = await cur.fetchall()
        await conn.commit()
        passed = [(r[1], 1.0 - float(r[2])) for r in rows if r[1] is not None]
    return passed[:n]


def probe_for(n: int) -> int:
    """How many of the nearest keyed clips are checked against ``clips`` for ``n`` results: a
    margin for those the other filters turn down (then everything is checked, a second time)."""
    return 2 * n + PROBE_MARGIN
