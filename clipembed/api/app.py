"""The HTTP app: search endpoints, health, metrics, and the background jobs' lifecycle.

The lifespan opens one :class:`~clipembed.runtime.Runtime` (pool, embedding service) and puts it
on ``app.state.runtime`` for the routes, with the sign-in throttle and the per-client search
limits beside it (shared through the service's Redis link when there is one); when
``EMBEDDING_ENABLED=true`` it runs the scheduler, and with ``CLIPEMBED_SERVE_WORKER=true`` a
queue worker, as background tasks. Shutdown sets their stop event and waits for the batch in
flight before closing the pool.

Around every route, outermost first (docs/security.md): the client's address from trusted
proxies only (:mod:`.clients`), the access log, the body limit (:mod:`.bodylimit`), relative
redirects (:mod:`.responses`), the console's security headers. A 422 echoes at most a short
prefix of what it rejects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clipembed import redaction
from clipembed import runtime as runtime_mod
from clipembed.admin import access, auth, throttle
from clipembed.admin import routes as admin_routes
from clipembed.api import (
    bodylimit,
    clients,
    docs,
    failures,
    limits,
    responses,
    search_report,
    search_routes,
    shedding,
)
from clipembed.db import connection
from clipembed.settings import Settings
from clipembed.status import model as status_model

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime_mod.open_runtime(settings, search=True) as rt:
            app.state.runtime = rt
            link = rt.service.link if rt.service is not None else None
            app.state.auth_throttle = throttle.AuthThrottle.from_settings(settings, link)
            app.state.search_limits = limits.SearchLimits.from_settings(settings, link)
            deadline_ms = settings.search_statement_timeout_ms or 30_000
            app.state.shedder = shedding.Shedder(
                connections=rt.reader.max_size, deadline_seconds=deadline_ms / 1000
            )
            stop = asyncio.Event()
            tasks: list[asyncio.Task[Any]] = []
            # bulk work on the primary follows what searches on the primary go through
            # (clipembed.api.search_report); a server reading a replica reports nothing
            app.state.search_report = None
            if rt.search_pool is not None and not settings.reads_replica:
                app.state.search_report = asyncio.create_task(
                    search_report.report(rt.search_pool, rt.pool, stop), name="search-report"
                )
                tasks.append(app.state.search_report)
            if settings.embedding_enabled:
                from clipembed.realtime import scheduler

                tasks.append(
                    asyncio.create_task(scheduler.run_scheduler(rt, stop), name="scheduler")
                )
            if settings.clipembed_serve_worker:
                from clipembed.realtime import worker

                tasks.append(asyncio.create_task(worker.Worker(rt).run(stop), name="worker"))
            try:
                yield
            finally:
                stop.set()
                for task in tasks:
                    try:
                        await task
                    except Exception as exc:
                        logger.error(
                            "background task failed",
                            extra={"task": task.get_name(), "reason": str(exc)},
                        )

    app = FastAPI(
        title="clipembed",
        summary="Hybrid keyword + semantic search over Twitch clips.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    docs.install(app)
    admin_routes.install(app)
    app.include_router(search_routes.router)
    app.add_exception_handler(RequestValidationError, responses.validation_error)
    failures.install(app)  # one error map: 503 + Retry-After for every route
    # add_middleware wraps what is there: the last one added runs first
    app.add_middleware(responses.RelativeRedirects)
    app.add_middleware(bodylimit.BodyLimit, max_bytes=settings.clipembed_max_body_bytes)
    app.add_middleware(clients.AccessLog)
    app.add_middleware(clients.ClientAddress, proxies=settings.trusted_proxies)

    @app.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> JSONResponse:
        """Database, Redis and provider configuration (never a secret).

        The provider's base URL (its credentials masked) only for an admin token: anyone else
        sees no URL at all."""
        rt: runtime_mod.Runtime = request.app.state.runtime
        svc = rt.require_service()
        report: dict[str, Any] = {}
        try:
            async with rt.pool.connection() as conn:
                await conn.execute(connection.PING)
            report["database"] = {"ok": True}
        except Exception as exc:
            report["database"] = {"ok": False, "error": type(exc).__name__}
        if rt.search_pool is not None and rt.search_pool is not rt.pool:
            try:  # the pool search reads (a replica when SEARCH_DATABASE_URL is set)
                async with rt.search_pool.connection() as conn:
                    await conn.execute(connection.PING)
                report["search_database"] = {"ok": True}
            except Exception as exc:
                report["search_database"] = {"ok": False, "error": type(exc).__name__}
        if svc.link is None:
            report["redis"] = {"ok": None, "detail": "not configured: uncached"}
        else:
            report["redis"] = {"ok": await svc.link.ping()}
        report["provider"] = {
            "name": svc.provider.name,
            "model": svc.model,
            "dimensions": svc.dimensions,
            "api_key_set": settings.openai_api_key is not None,
        }
        if await _is_admin(request):
            report["provider"]["base_url"] = (
                _redact(settings.embedding_api_base_url)
                if svc.provider.capabilities.remote
                else None
            )
        report["scheduler"] = {"enabled": settings.embedding_enabled}
        ok = report["database"]["ok"] is True and report.get("search_database", {}).get("ok", True)
        return JSONResponse({"ok": ok, **report}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics_endpoint(
        request: Request,
        _: auth.Principal = Depends(access.api_principal),
    ) -> Response:
        """Prometheus metrics; scrape with an admin token (`authorization` / bearer_token).

        The status model's figures are refreshed first, so every /status figure is a metric.
        """
        rt: runtime_mod.Runtime = request.app.state.runtime
        try:
            status_model.export(
                await status_model.collect(
                    rt.pool, rt.settings, dimensions=rt.dimensions, history=False
                )
            )
        except Exception as exc:  # the process's own metrics are still worth serving
            logger.warning("status figures unavailable for /metrics", extra={"reason": str(exc)})
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _is_admin(request: Request) -> bool:
    """Whether the request carries an admin token or session (a wrong one counts as a failure,
    but /healthz answers anyway: a health check is never throttled)."""
    if "authorization" not in request.headers and auth.SESSION_COOKIE not in request.cookies:
        return False
    try:
        return await access.identify(request) is not None
    except access.Throttled:
        return False


def _redact(url: str | None) -> str | None:
    """A base URL without credentials: a user may have put them in it (https://user:key@host)."""
    return redaction.redact_url(url, keep_user=False)
