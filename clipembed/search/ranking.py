"""A page of results: both branches run (overlapping where they can) and fused.

:mod:`clipembed.search.core` holds the corpus, its parameters and the two branches; this
module decides how deep each branch goes (:func:`branch_depth`), runs them (:func:`rank`)
and turns their lists into the page's hits (:func:`fuse`, pure). The HTTP search
(:func:`clipembed.search.clips.search_detailed`) runs its branches on connections of its own
and fuses here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import psycopg

from clipembed import metrics
from clipembed.search import fusion
from clipembed.search.core import (
    Corpus,
    Hit,
    Params,
    Where,
    keyword_branch,
    semantic_branch,
    similarities,
)


async def rank(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    *,
    query: str | None,
    embed_query: Callable[[], Any] | None,
    where: Where,
    params: Params,
    exclude_id: Any = None,
    vector: np.ndarray | None = None,
    selective: bool = False,
    keys: Where | None = None,
    semantic_conn: psycopg.AsyncConnection[Any] | None = None,
) -> list[Hit]:
    """The page ``[offset, offset+limit)`` of the ranking in ``params.mode``.

    ``embed_query`` is awaited only when the vector branch runs (keyword mode needs no
    provider); ``vector`` may be given directly (similar clips). ``selective``: the filters
    keep a small share of the corpus, so the keyword branch filters before scoring.
    ``semantic_conn``: a second connection, so that in hybrid mode the query embedding and the
    vector branch run while the keyword branch does (latency = the slower branch, not the sum).
    """
    window = branch_depth(params)
    embedded: list[np.ndarray] = []  # the query vector, once the vector branch has it
    run_keyword = params.mode in ("keyword", "hybrid") and bool(query)
    run_semantic = params.mode in ("semantic", "hybrid")

    async def keyword() -> list[tuple[Any, float]]:
        if not run_keyword or query is None:
            return []
        return await keyword_branch(
            conn, corpus, query, where, params, window, filter_first=selective
        )

    async def semantic(on: psycopg.AsyncConnection[Any]) -> list[tuple[Any, float]]:
        if not run_semantic:
            return []
        v = vector
        if v is None and embed_query is not None:
            v = await embed_query()
        if v is None:
            return []
        embedded.append(v)
        return await semantic_branch(
            on,
            corpus,
            v,
            where,
            params,
            window,
            exclude_id=exclude_id,
            selective=selective,
            keys=keys,
        )

    if run_keyword and run_semantic and semantic_conn is not None:
        # both run to completion even if one fails: a branch still running on a connection
        # the caller is about to return to the pool would be a use-after-release
        kw_task = asyncio.ensure_future(keyword())
        sem_task = asyncio.ensure_future(semantic(semantic_conn))
        try:
            await asyncio.wait((kw_task, sem_task))
        finally:  # cancelled (client gone): stop both and wait, so no query outlives its conn
            for task in (kw_task, sem_task):
                task.cancel()
            await asyncio.gather(kw_task, sem_task, return_exceptions=True)
        kw, sem = kw_task.result(), sem_task.result()  # raises a branch's error, if any
    else:
        kw, sem = await keyword(), await semantic(conn)
    if params.mode == "hybrid" and embedded:
        sem = await completed(conn, corpus, embedded[0], kw, sem, window)
    return fuse(kw, sem, params)


async def completed(
    conn: psycopg.AsyncConnection[Any],
    corpus: Corpus,
    vector: np.ndarray,
    keyword: Sequence[tuple[Any, float]],
    semantic: Sequence[tuple[Any, float]],
    n: int,
) -> list[tuple[Any, float]]:
    """Hybrid's vector ranking with the keyword branch's candidates it missed taken in.

    An HNSW walk does not reach every region of the graph: at a million clips, the nearest
    clips of a rare name's small cluster were missed while BM25 ranked them first
    (docs/benchmarks.md). Their exact similarities cost one statement of primary-key lookups
    (at most ``n`` of them), and :func:`complete` puts in its place each that the index should
    have returned. The keyword candidates passed the same filters, so every one may be ranked.
    """
    have = {doc for doc, _ in semantic}
    missing = [doc for doc, _ in keyword if doc not in have]
    if not missing:
        return list(semantic)
    merged = complete(semantic, await similarities(conn, corpus, vector, missing), n)
    taken = sum(1 for doc, _ in merged if doc not in have)
    if taken:
        metrics.SEARCH_COMPLETED.inc(taken)
    return merged


def complete(
    semantic: Sequence[tuple[Any, float]], scored: Sequence[tuple[Any, float]], n: int
) -> list[tuple[Any, float]]:
    """The top ``n`` by similarity of ``semantic`` (an ANN's list, best first) and ``scored``
    (exact similarities of other documents), ties broken by id as the branch breaks them (pure).

    A scored document below the list's last, when the list is full (``n`` long), is left out:
    the branch was right to leave it beyond the window, and ranking it would change the fusion
    of documents the index did not miss. When the list is shorter than ``n``, the walk ran out
    of candidates and every scored document belongs.
    """
    have = {doc for doc, _ in semantic}
    floor = semantic[-1][1] if semantic and len(semantic) >= n else float("-inf")
    extra = []
    for doc, s in scored:
        if doc not in have and s >= floor:
            have.add(doc)  # once each, whatever the caller passed
            extra.append((doc, s))
    if not extra:
        return list(semantic)[:n]
    return sorted([*semantic, *extra], key=lambda x: (-x[1], str(x[0])))[:n]


def branch_depth(params: Params) -> int:
    """Candidates each branch returns: the window for fusion (a clip ranked 150th by one
    branch and 3rd by the other belongs on the first page); one branch alone only needs the
    page. An HNSW scan for 200 neighbours with ef_search 100 was an iterative scan that cost
    ~8x the 20 of a first page (docs/benchmarks.md, "Statements and time per search")."""
    if params.mode == "hybrid":
        return params.window
    return params.offset + params.limit


def fuse(
    keyword: Sequence[tuple[Any, float]], semantic: Sequence[tuple[Any, float]], params: Params
) -> list[Hit]:
    """Combine branch results into hits and cut the page (pure)."""
    kw = {doc: (i, s) for i, (doc, s) in enumerate(keyword, start=1)}
    sem = {doc: (i, s) for i, (doc, s) in enumerate(semantic, start=1)}
    if params.mode == "keyword":
        ordered = [(doc, s) for doc, s in keyword]
    elif params.mode == "semantic":
        ordered = [(doc, s) for doc, s in semantic]
    else:
        fused = fusion.rrf(
            {"keyword": [d for d, _ in keyword], "semantic": [d for d, _ in semantic]},
            k=params.rrf_k,
            weights={"keyword": params.keyword_weight, "semantic": params.semantic_weight},
        )
        ordered = [(f.id, f.score) for f in fused]
    page = ordered[params.offset : params.offset + params.limit]
    hits = []
    for position, (doc, score) in enumerate(page, start=params.offset + 1):
        k, s = kw.get(doc), sem.get(doc)
        hits.append(
            Hit(
                doc,
                position,
                score,
                keyword_rank=k[0] if k else None,
                keyword_score=k[1] if k else None,
                semantic_rank=s[0] if s else None,
                semantic_score=s[1] if s else None,
            )
        )
    return hits
