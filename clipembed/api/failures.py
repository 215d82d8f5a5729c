"""One error map for every route (issue 18): exceptions to HTTP answers, in one place.

Routes raise; the app's exception handlers answer. A database that is slow, overloaded or gone,
a provider that fails, a search shed under load: 503 with ``Retry-After`` and a message safe to
show anyone (never a driver's or a provider's own text, which may echo anything). Search,
similar clips, the console and ``/status`` therefore answer alike, and the next route cannot
forget a case.
"""

from __future__ import annotations

import logging

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from clipembed import errors
from clipembed.search import clips as clip_search

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5  # a provider blip or a busy database: worth a retry soon


class Overloaded(Exception):
    """More searches than can be served within the deadline (:mod:`.shedding`), or an admitted
    one that did not finish by it; the message (ours, safe to show) says which."""


def unavailable(message: str, *, retry_after: int = RETRY_AFTER_SECONDS) -> JSONResponse:
    return JSONResponse(
        {"detail": message}, status_code=503, headers={"Retry-After": str(retry_after)}
    )


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    reason = str(exc) or "too many searches at once"
    return unavailable(f"overloaded: {reason}, retry shortly", retry_after=1)


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    # the pool's wait is bounded by the search deadline: more waited than it can serve
    return unavailable("overloaded: the database is busy, retry shortly", retry_after=1)


async def _query_canceled(request: Request, exc: Exception) -> JSONResponse:
    return unavailable("the request took too long: try a more specific query")


async def _database(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable", extra={"error": type(exc).__name__})
    return unavailable("the database is unavailable: try again shortly")


async def _semantic(request: Request, exc: Exception) -> JSONResponse:
    return unavailable(str(exc))  # written to be shown (clipembed.search.clips)


async def _provider(request: Request, exc: Exception) -> JSONResponse:
    return unavailable("the embedding provider is unavailable: try again shortly")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _no_service(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


def install(app: FastAPI) -> None:
    """The map, most specific first (a handler is looked up along the exception's MRO)."""
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(psycopg_pool.PoolTimeout, _pool_timeout)
    app.add_exception_handler(psycopg.errors.QueryCanceled, _query_canceled)
    app.add_exception_handler(psycopg.OperationalError, _database)
    app.add_exception_handler(psycopg.InterfaceError, _database)
    app.add_exception_handler(clip_search.SemanticUnavailable, _semantic)
    app.add_exception_handler(errors.ProviderError, _provider)
    app.add_exception_handler(clip_search.InvalidQuery, _invalid)
    app.add_exception_handler(errors.ConfigurationError, _no_service)
