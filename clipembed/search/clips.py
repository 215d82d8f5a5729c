"""Search over the ``clips`` table: its corpus description, filters and result rows.

Field weights follow the original's tsvector weights — title (A) above creator and
broadcaster (B) above game (C) — applied BM25F-style at query time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from clipembed import clips as clips_mod
from clipembed import errors, metrics, spaces
from clipembed.embedding import service as service_mod
from clipembed.search import core, languages, queries, ranking
from clipembed.store import space_table

logger = logging.getLogger(__name__)

CLIPS = core.Corpus(
    table="clips",
    postings="clip_postings",
    doclen="clip_doclen",
    field_weights=(2.0, 1.0, 0.5, 1.0),
    base_filter="NOT d.is_removed",
    query_configs=languages.QUERY_CONFIGS,
)

#: The service that embeds queries for a space (``Runtime.service_for``).
ServiceFor = Callable[[spaces.Space], Awaitable[service_mod.EmbeddingService]]
#: What search takes to embed a query: a service, a resolver by space, or none (keyword only).
Embedder = service_mod.EmbeddingService | ServiceFor | None


def corpus_for(space: spaces.Space) -> core.Corpus:
    """The clips corpus whose vector branch reads ``space``'s table and HNSW index."""
    return dataclasses.replace(CLIPS, vectors=space.table_name, vector_type=space.storage)


async def _service(embedder: Embedder, space: spaces.Space) -> service_mod.EmbeddingService | None:
    """The service for the space a search reads; a fixed service must embed in that space."""
    if embedder is None:
        return None
    if isinstance(embedder, service_mod.EmbeddingService):
        if embedder.dimensions != space.dimensions:
            raise errors.ConfigurationError(
                f"the active space {space.name!r} holds {space.dimensions}-dimensional vectors "
                f"but this process embeds queries in {embedder.dimensions}"
            )
        return embedder
    return await embedder(space)


MAX_QUERY_CHARS = 500
MAX_LIMIT = 100
MAX_WINDOW = 1000


@dataclasses.dataclass(frozen=True)
class Filters:
    game: str | None = None
    broadcaster: str | None = None
    language: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    include_nsfw: bool = False

    @property
    def selective(self) -> bool:
        """One game or one broadcaster: a small share of clips (language and dates may not be)."""
        return bool(self.game or self.broadcaster)

    def _names(self) -> list[tuple[str, str, str, str]]:
        """The game and broadcaster filters that are set: (parameter, sanitised value, ``clips``
        column, the space's key column). Both :meth:`where` and :meth:`keys` test them."""
        named = (
            ("f_game", self.game, "game_name", "game_key"),
            ("f_broadcaster", self.broadcaster, "broadcaster_name", "broadcaster_key"),
        )
        return [(p, clips_mod.sanitize(v), col, key) for p, v, col, key in named if v]

    def keys(self) -> core.Where | None:
        """The game and broadcaster filters on a space's own key columns (alias ``e``;
        migration 0014), or None without either. The same parameters as :meth:`where`, which
        still applies: the keys narrow the candidates, ``clips`` decides."""
        names = self._names()
        if not names:
            return None
        parts = [
            sql.SQL("e.{} = lower({})").format(sql.Identifier(key), sql.Placeholder(p))
            for p, _, _, key in names
        ]
        return sql.SQL(" AND ").join(parts), {p: v for p, v, _, _ in names}

    def where(self) -> core.Where:
        """The filters as SQL on the corpus alias ``d``; values are parameters, never SQL text.

        Text values are sanitised like stored clip fields (a NUL byte, which PostgreSQL text
        cannot hold, would otherwise fail the query), so hostile input matches nothing instead.
        """
        parts: list[sql.Composable] = []
        args: dict[str, Any] = {}
        for p, value, col, _ in self._names():
            parts.append(
                sql.SQL("lower(d.{}) = lower({})").format(sql.Identifier(col), sql.Placeholder(p))
            )
            args[p] = value
        if self.language:
            parts.append(sql.SQL("d.language = %(f_language)s"))
            args["f_language"] = clips_mod.sanitize(self.language)
        if self.created_from:
            parts.append(sql.SQL("d.created_at >= %(f_from)s"))
            args["f_from"] = self.created_from
        if self.created_to:
            parts.append(sql.SQL("d.created_at < %(f_to)s"))
            args["f_to"] = self.created_to
        if not self.include_nsfw:
            parts.append(sql.SQL("NOT d.is_nsfw"))
        if not parts:
            return core.no_filters()
        return sql.SQL(" AND ").join(parts), args


class InvalidQuery(errors.ClipembedError, ValueError):
    """A search request that cannot be answered as asked (the API answers 422)."""


def clean_query(query: str | None, *, required: bool) -> str:
    text = clips_mod.sanitize(query)
    if required and not text:
        raise InvalidQuery("the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the query is longer than {MAX_QUERY_CHARS} characters")
    return text


def check_params(params: core.Params) -> None:
    if params.mode not in core.MODES:
        raise InvalidQuery(f"unknown mode {params.mode!r}: use hybrid, keyword or semantic")
    if not 1 <= params.limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}")
    if params.offset < 0:
        raise InvalidQuery("offset must not be negative")
    if params.offset + params.limit > params.window:
        raise InvalidQuery(f"offset + limit must be at most {params.window} (the ranking window)")


async def _rows(pool: AsyncConnectionPool, ids: list[Any]) -> dict[Any, dict[str, Any]]:
    if not ids:
        return {}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.CLIP_ROWS, (ids,))
        return {r["id"]: r for r in await cur.fetchall()}


class SemanticUnavailable(errors.ClipembedError):
    """Semantic-only search without a query embedding: the API answers 503 with Retry-After.

    The message is safe to show anyone (no provider text)."""


@dataclasses.dataclass
class SearchOutcome:
    results: list[dict[str, Any]]
    #: branches that could not answer ("semantic"): the results come from the others
    degraded: list[str] = dataclasses.field(default_factory=list)
    #: the embedding space the answer was read from (one per search: see clipembed.spaces)
    space: dict[str, Any] = dataclasses.field(default_factory=dict)


async def search(
    pool: AsyncConnectionPool,
    service: Embedder,
    query: str,
    *,
    params: core.Params,
    filters: Filters,
) -> list[dict[str, Any]]:
    """Ranked clips for a text query: each clip's columns plus score, rank and branch detail."""
    return (await search_detailed(pool, service, query, params=params, filters=filters)).results


async def search_detailed(
    pool: AsyncConnectionPool,
    embedder: Embedder,
    query: str,
    *,
    params: core.Params,
    filters: Filters,
    admit: Callable[[], Awaitable[None]] | None = None,
) -> SearchOutcome:
    """:func:`search`, saying which branch it had to do without.

    The query embedding starts first and runs while the keyword branch holds a connection;
    no connection is held while waiting for it. In hybrid mode a query embedding that misses
    its deadline (or fails) degrades the answer to the keyword branch; in semantic mode it is
    :class:`SemanticUnavailable`.

    The active embedding space is read once, first: the query is embedded with its model and
    its table is searched, so a promote between two searches changes the next one, never half
    of one. ``embedder``: the service, or ``Runtime.service_for`` to follow promotes.
    ``admit``: awaited before the query costs a new embedding (see ``QueryEmbedder.embed``);
    what it raises ends the search.
    """
    text = clean_query(query, required=True)
    check_params(params)
    space = await spaces.active_in(pool)
    wants_vectors = params.mode in ("semantic", "hybrid")
    service = await _service(embedder, space) if wants_vectors else None
    corpus = corpus_for(space)
    multilingual = service.settings.multilingual if service is not None else False
    params = languages.fusion_for(text, params, multilingual=multilingual)
    wants_keyword = params.mode in ("keyword", "hybrid")
    wants_semantic = params.mode in ("semantic", "hybrid")
    if wants_semantic and service is None:
        raise errors.ConfigurationError("semantic search needs an embedding service")
    embedding: asyncio.Task[np.ndarray] | None = None
    if wants_semantic and service is not None:
        embedding = asyncio.create_task(_embed_query(service, text, admit))
    degraded: list[str] = []
    where = filters.where()
    depth = ranking.branch_depth(params)

    async def keyword_part() -> list[tuple[Any, float]]:
        if not wants_keyword:
            return []
        async with pool.connection() as conn:
            return await core.keyword_branch(
                conn, CLIPS, text, where, params, depth, filter_first=filters.selective
            )

    embedded: list[np.ndarray] = []  # the query vector, once the vector branch has it

    async def semantic_part() -> list[tuple[Any, float]]:
        if embedding is None:
            return []
        try:
            vector = await embedding
        except errors.ProviderError as exc:
            reason = type(exc).__name__
            metrics.SEARCH_DEGRADED.labels("semantic", reason).inc()
            logger.warning(
                "search degraded: no query embedding",
                extra={"mode": params.mode, "reason": reason},
            )
            if params.mode == "semantic":
                raise SemanticUnavailable(
                    "semantic search is unavailable right now: try again shortly, "
                    "or use mode=keyword"
                ) from exc
            degraded.append("semantic")
            return []
        embedded.append(vector)
        # a connection only once the vector is here: none is held while the provider answers
        async with pool.connection() as conn:
            return await core.semantic_branch(
                conn,
                corpus,
                vector,
                where,
                params,
                depth,
                selective=filters.selective,
                keys=filters.keys(),
            )

    # The two branches overlap: the vector branch starts on a connection of its own as soon as
    # its query embedding is there, while the keyword branch runs (hybrid latency is the slower
    # branch, not their sum). Each holds one connection at a time, so no search waits for a
    # second connection while holding a first (no pool deadlock, however small the pool).
    parts = [asyncio.ensure_future(keyword_part()), asyncio.ensure_future(semantic_part())]
    try:
        await asyncio.wait(parts, return_when=asyncio.FIRST_EXCEPTION)
        for part in parts:  # a branch's error, if any, whichever finished first
            failure = part.exception() if part.done() and not part.cancelled() else None
            if failure is not None:
                raise failure
        keyword, semantic = parts[0].result(), parts[1].result()
    finally:
        # cancelled (client gone, deadline) or one branch failed: stop the other and wait for
        # it, so that no statement outlives this search and no task's error goes unread
        for part in parts:
            part.cancel()
        await asyncio.gather(*parts, return_exceptions=True)
        if embedding is not None:
            if not embedding.done():
                embedding.cancel()
            elif not embedding.cancelled():
                # read its error, or asyncio logs "Task exception was never retrieved"
                embedding.exception()
    if params.mode == "hybrid" and keyword and embedded:
        # after both branches, on a connection of its own: never two held at once
        async with pool.connection() as conn:
            semantic = await ranking.completed(conn, corpus, embedded[0], keyword, semantic, depth)
    hits = ranking.fuse(keyword, semantic, params)
    described = space.describe(service.settings if service is not None else None)
    return SearchOutcome(await _hydrate(pool, hits), degraded, described)


async def _embed_query(
    service: service_mod.EmbeddingService,
    text: str,
    admit: Callable[[], Awaitable[None]] | None = None,
) -> np.ndarray:
    """Through the query lane when the service has one (it always has, from open_service)."""
    if service.queries is not None:
        return await service.queries.embed(text, admit=admit)
    if admit is not None:  # no lane to tell a cached query apart: count it
        await admit()
    result = await service.embed([text])
    vector: np.ndarray = result.vectors[0]
    return vector


async def similar(
    pool: AsyncConnectionPool, clip_id: Any, *, params: core.Params, filters: Filters
) -> list[dict[str, Any]] | None:
    """Clips nearest to a clip's own vector in the active space; None when the clip does not
    exist or has no vector there."""
    return (await similar_detailed(pool, clip_id, params=params, filters=filters))[0]


async def similar_detailed(
    pool: AsyncConnectionPool, clip_id: Any, *, params: core.Params, filters: Filters
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """:func:`similar`, and the space it read (results None: no such clip or vector)."""
    check_params(dataclasses.replace(params, mode="semantic"))
    space = await spaces.active_in(pool)
    async with pool.connection() as conn:
        cur = await conn.execute(space_table.vector_of(space.table_name), (clip_id,))
        row = await cur.fetchone()
        await conn.commit()
        if row is None or row[0] is None:
            return None, space.describe()
        vector: np.ndarray = (
            row[0].to_numpy() if hasattr(row[0], "to_numpy") else np.asarray(row[0])
        )
        hits = await ranking.rank(
            conn,
            corpus_for(space),
            query=None,
            embed_query=None,
            where=filters.where(),
            params=dataclasses.replace(params, mode="semantic"),
            exclude_id=clip_id,
            vector=vector,
            selective=filters.selective,
            keys=filters.keys(),
        )
    return await _hydrate(pool, hits), space.describe()


async def _hydrate(pool: AsyncConnectionPool, hits: list[core.Hit]) -> list[dict[str, Any]]:
    rows = await _rows(pool, [h.id for h in hits])
    out = []
    for h in hits:
        row = rows.get(h.id)
        if row is None:  # deleted between ranking and reading
            continue
        out.append(
            {
                **row,
                "score": h.score,
                "rank": h.rank,
                "keyword": None
                if h.keyword_rank is None
                else {"rank": h.keyword_rank, "score": h.keyword_score},
                "semantic": None
                if h.semantic_rank is None
                else {"rank": h.semantic_rank, "score": h.semantic_score},
            }
        )
    return out
