"""HTTP search endpoints: ``GET /search`` and ``GET /clips/{id}/similar``.

Contract with the app that includes :data:`router`: before the first request its lifespan sets
``app.state.runtime`` to a :class:`clipembed.runtime.Runtime` whose ``.pool`` is an open
``AsyncConnectionPool`` on a migrated database and whose ``.service`` is the embedding service
(or None: keyword search still works, and the vector modes answer 503), and the app installs
the error map (:func:`clipembed.api.failures.install`: routes raise, the map answers). Nothing
else is needed, so a test can mount the router on a bare FastAPI app. When the app sets
``app.state.shedder``, searches past what completes within the deadline are shed at once
(:mod:`clipembed.api.shedding`). When the app also sets
``app.state.search_limits``, each client's searches are limited (:mod:`clipembed.api.limits`:
requests per second, new semantic queries per minute; 429 with ``Retry-After``).

Every input is validated before any SQL runs: an empty query or one over
:data:`clipembed.search.clips.MAX_QUERY_CHARS` (500) characters, a limit outside 1-100, an
offset past the ranking window, an unknown mode or a bad date is a 422 with a readable message.
Nothing a user types reaches a query parser (see :mod:`clipembed.search.core`), so hostile input
gets results or a 422, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from clipembed.api import failures, limits, shedding
from clipembed.search import clips as clip_search
from clipembed.search import compare, core


async def search_access(request: Request) -> None:
    """Public unless CLIPEMBED_SEARCH_TOKEN is set; then `Authorization: Bearer <it>`."""
    token = request.app.state.runtime.settings.clipembed_search_token
    if token is None or not token.get_secret_value():
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(
            status_code=401, detail="search needs a token", headers={"WWW-Authenticate": "Bearer"}
        )


async def admitted(request: Request) -> AsyncIterator[None]:
    """Load shedding (:mod:`.shedding`): a search holds a place while it runs, or is refused
    at once with 503 "overloaded" when more are in flight than complete within the deadline."""
    shedder: shedding.Shedder | None = getattr(request.app.state, "shedder", None)
    if shedder is None:
        yield
        return
    if not shedder.try_enter():
        raise failures.Overloaded
    request.state.answer_by = shedder.deadline_from(asyncio.get_running_loop().time())
    try:
        yield
    except BaseException:
        shedder.leave(answered=False)
        raise
    shedder.leave()


@contextlib.asynccontextmanager
async def within_deadline(request: Request) -> AsyncIterator[None]:
    """An admitted search answers by its deadline (the search deadline from its admission), or
    gets 503 "overloaded" then: never a late answer that the client has likely given up on."""
    answer_by = getattr(request.state, "answer_by", None)
    if answer_by is None:  # no shedder (tests of the routes alone)
        yield
        return
    try:
        async with asyncio.timeout_at(answer_by):
            yield
    except TimeoutError:
        raise failures.Overloaded("the search did not finish within its deadline") from None


router = APIRouter(
    tags=["search"],
    dependencies=[Depends(search_access), Depends(limits.per_client), Depends(admitted)],
)


class BranchDetail(BaseModel):
    rank: int
    score: float


class ClipHit(BaseModel):
    id: uuid.UUID
    twitch_clip_id: str
    twitch_clip_url: str
    embed_url: str
    title: str
    creator_name: str
    broadcaster_name: str
    game_name: str | None
    language: str | None
    thumbnail_url: str | None
    duration: float | None
    view_count: int
    vote_score: int
    created_at: dt.datetime
    is_nsfw: bool
    score: float
    rank: int
    keyword: BranchDetail | None
    semantic: BranchDetail | None


class SpaceInfo(BaseModel):
    """The embedding space a response was read from (every search reads exactly one)."""

    name: str
    provider: str | None
    model: str | None
    dimensions: int
    storage: str


class SearchResponse(BaseModel):
    query: str | None
    mode: str
    limit: int
    offset: int
    results: list[ClipHit]
    #: branches that could not answer (e.g. ["semantic"] when the query embedding missed its
    #: deadline): the results come from the others
    degraded: list[str] = []
    space: SpaceInfo


class ErrorBody(BaseModel):
    """Every error: ``detail`` is a readable message, or FastAPI's list of field errors."""

    detail: str | list[dict[str, Any]]


#: Documented on every route: the OpenAPI schema says what each error looks like.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "CLIPEMBED_SEARCH_TOKEN is set and was not sent."},
    422: {
        "model": ErrorBody,
        "description": "Invalid request (a message, or field errors echoing at most 100 "
        "characters of the input).",
    },
    429: {
        "model": ErrorBody,
        "description": "This client's search limits are spent (requests per second, or new "
        "semantic queries per minute); retry after the Retry-After header.",
    },
    503: {
        "model": ErrorBody,
        "description": "Overloaded (shed at once), or a dependency is slow or unavailable;"
        " retry after the Retry-After header.",
    },
}


def _params(mode: core.Mode, limit: int, offset: int) -> core.Params:
    return core.Params(mode=mode, limit=limit, offset=offset)


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def query_filters(
    game: str | None = Query(None, max_length=100),
    broadcaster: str | None = Query(None, max_length=100),
    language: str | None = Query(None, max_length=10),
    from_: dt.datetime | None = Query(
        None, alias="from", description="Created at or after (ISO 8601)."
    ),
    to: dt.datetime | None = Query(None, description="Created before (ISO 8601)."),
    include_nsfw: bool = False,
) -> clip_search.Filters:
    """The filters both endpoints take, validated once (a FastAPI dependency)."""
    from_, to = _aware(from_), _aware(to)  # naive means UTC; aware and naive must compare
    if from_ and to and from_ >= to:
        raise _unprocessable("'from' must be before 'to'")
    return clip_search.Filters(
        game=game,
        broadcaster=broadcaster,
        language=language,
        created_from=from_,
        created_to=to,
        include_nsfw=include_nsfw,
    )


@router.get("/search", response_model=SearchResponse, responses=ERRORS)
async def search(
    request: Request,
    q: str = Query(
        ...,
        description="What to look for (1-500 characters).",
        max_length=clip_search.MAX_QUERY_CHARS,
    ),
    mode: Literal["hybrid", "keyword", "semantic"] = "hybrid",
    filters: clip_search.Filters = Depends(query_filters),
    limit: int = Query(20, ge=1, le=clip_search.MAX_LIMIT),
    offset: int = Query(0, ge=0, le=core.DEFAULT_WINDOW),
) -> dict[str, Any]:
    """Hybrid (default), keyword (BM25) or semantic (vector) search with filters in both branches."""
    rt = request.app.state.runtime
    # errors become answers in one place: clipembed.api.failures (503 + Retry-After, 422)
    async with within_deadline(request):
        outcome = await clip_search.search_detailed(
            rt.reader,
            rt.service_for if rt.service is not None else None,
            q,
            params=_params(mode, limit, offset),
            filters=filters,
            admit=limits.admission(request),
        )
    if rt.service is not None:  # for `clipembed model compare` (in the background, best effort)
        compare.remember(rt.service.link, rt.settings.redis_key_prefix, q)
    return {
        "query": q,
        "mode": mode,
        "limit": limit,
        "offset": offset,
        "results": outcome.results,
        "degraded": outcome.degraded,
        "space": outcome.space,
    }


@router.get(
    "/clips/{clip_id}/similar",
    response_model=SearchResponse,
    responses={
        **ERRORS,
        404: {"model": ErrorBody, "description": "No such clip, or it has no embedding yet."},
    },
)
async def similar(
    request: Request,
    clip_id: uuid.UUID,
    filters: clip_search.Filters = Depends(query_filters),
    limit: int = Query(10, ge=1, le=clip_search.MAX_LIMIT),
    offset: int = Query(0, ge=0, le=core.DEFAULT_WINDOW),
) -> dict[str, Any]:
    """Clips whose embeddings are nearest to this clip's (the clip itself excluded)."""
    rt = request.app.state.runtime
    async with within_deadline(request):
        results, space = await clip_search.similar_detailed(
            rt.reader, clip_id, params=_params("semantic", limit, offset), filters=filters
        )
    if results is None:
        raise HTTPException(status_code=404, detail="no such clip, or it has no embedding yet")
    return {
        "query": None,
        "mode": "semantic",
        "limit": limit,
        "offset": offset,
        "results": results,
        "space": space,
    }


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
