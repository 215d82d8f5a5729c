"""The console's HTTP layer: ``/status`` (JSON) and the ``/admin`` pages. Thin on purpose.

Every route here needs credentials (:mod:`clipembed.admin.access`): a Bearer token, or a
browser session. JSON routes answer 401 without them; pages send a browser to the sign-in
page. Every POST from a browser carries the session's CSRF token, and its body is read only
once the credentials are checked. Pages are server-rendered Jinja2 with autoescaping (clip
titles are user content) and work with JavaScript disabled.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from clipembed.admin import access, auth, charts, throttle
from clipembed.realtime import queue
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.status import model as status_model
from clipembed.store import admin_tables

logger = logging.getLogger(__name__)

templates = access.templates
router = APIRouter(include_in_schema=False)

FAILURES_SHOWN = 500

#: Strict policy for the console and every JSON answer: nothing inline, nothing foreign.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Swagger UI initialises itself with an inline script: its pages get their own policy.
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith(DOCS_PATHS):
            response.headers.setdefault("Content-Security-Policy", CSP)
        else:
            response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
        if request.url.path.startswith(("/admin", "/status", "/metrics")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def install(app: FastAPI) -> None:
    """Mount the console on an app: its routes, its stylesheet, the security headers, and the
    answers to a missing sign-in (:func:`clipembed.admin.access.register_handlers`)."""
    app.add_middleware(SecurityHeaders)
    static = access.HERE / "static"
    app.mount("/admin/static", StaticFiles(directory=str(static)), name="admin-static")
    app.include_router(access.router)
    app.include_router(router)
    access.register_handlers(app)


# ------------------------------------------------------------------------------ JSON


def _mode_or_hybrid(value: str) -> core.Mode:
    """The console's search box: an unknown mode in the URL searches hybrid."""
    try:
        return core.parse_mode(value)
    except ValueError:
        return "hybrid"


@router.get("/status")
async def status(
    request: Request, _: auth.Principal = Depends(access.api_principal), history: bool = True
) -> JSONResponse:
    rt = access.runtime(request)
    data = await status_model.collect(
        rt.pool, rt.settings, dimensions=rt.dimensions, history=history
    )
    return JSONResponse(data)


# ------------------------------------------------------------------------------ pages


def _page(request: Request, name: str, principal: auth.Principal, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"who": principal.name, "csrf": principal.csrf or "", "path": request.url.path, **context},
    )


@router.get("/admin", response_class=HTMLResponse)
async def overview(
    request: Request, principal: auth.Principal = Depends(access.page_principal)
) -> HTMLResponse:
    rt = access.runtime(request)
    data = await status_model.collect(rt.pool, rt.settings, dimensions=rt.dimensions)
    points = data["history"]["points"]
    bucket = data["history"]["bucket_minutes"]
    series = [
        ("Clips embedded per minute", [p["clips"] / bucket for p in points], "", "series"),
        ("Backlog: items pending in the queue", [p["pending"] for p in points], "", "backlog"),
        ("Lag: age of the oldest pending item (s)", [p["lag_seconds"] for p in points], "", "lag"),
        (f"Failed clips per {bucket} min", [p["failed"] for p in points], "", "errors"),
    ]
    chart_list = [
        (title, charts.line_chart(values, title=title, unit=unit, css_class=css))
        for title, values, unit, css in series
    ]
    return _page(
        request,
        "overview.html",
        principal,
        s=data,
        charts=chart_list,
        access=await _access(request),
    )


async def _access(request: Request) -> dict[str, Any]:
    """The overview's figures on refused access: failed sign-ins and tokens, refused searches."""
    figures = await throttle.of(request).figures()
    limits = getattr(request.app.state, "search_limits", None)
    figures["searches_refused_last_hour"] = await limits.refused_last_hour() if limits else 0
    shedder = getattr(request.app.state, "shedder", None)
    figures["searches_shed"] = shedder.shed_total if shedder is not None else 0
    return figures


@router.get("/admin/failures", response_class=HTMLResponse)
async def failures(
    request: Request,
    principal: auth.Principal = Depends(access.page_principal),
    retried: int | None = Query(None, ge=0),
) -> HTMLResponse:
    async with access.runtime(request).pool.connection() as conn:
        rows = await (await conn.execute(admin_tables.DEAD_LETTERS, (FAILURES_SHOWN,))).fetchall()
    letters = [
        {
            "clip_id": str(r[0]),
            "title": r[1],
            "broadcaster": r[2],
            "attempts": r[3],
            "error": r[4] or "",
            "failed_at": r[5],
        }
        for r in rows
    ]
    return _page(
        request, "failures.html", principal, letters=letters, retried=retried, shown=FAILURES_SHOWN
    )


@router.post("/admin/failures/retry", response_class=HTMLResponse)
async def retry(
    request: Request, principal: auth.Principal = Depends(access.page_principal)
) -> Response:
    """Retry dead letters: a selection, or all. A first POST asks for confirmation."""
    form = await access.read_form(request, max_fields=access.FORM_FIELDS)
    if not auth.csrf_ok(principal, access.field(form, "csrf", access.MAX_TOKEN)):
        return access.csrf_refused(request)
    one = access.field(form, "one", 64)
    all_ = access.field(form, "all", 10) in ("true", "1", "on", "yes")
    confirm = access.field(form, "confirm", 10)
    # a row's own button: that clip alone, whatever else is ticked
    ids = [one] if one else [i for i in form.getlist("ids") if isinstance(i, str)]
    try:
        chosen = [str(uuid.UUID(i)) for i in ids[:FAILURES_SHOWN]]
    except ValueError:
        return templates.TemplateResponse(
            request,
            "error.html",
            {"title": "Not retried", "message": "That selection is not valid."},
            status_code=422,
        )
    if not all_ and not chosen:
        return RedirectResponse("/admin/failures", status_code=303)
    if confirm != "yes":
        return _page(request, "confirm_retry.html", principal, ids=chosen, all=all_)
    async with access.runtime(request).pool.connection() as conn:
        moved = await queue.replay(conn, None if all_ else chosen)
    logger.info("dead letters retried from the console", extra={"by": principal.name, "n": moved})
    return RedirectResponse(f"/admin/failures?retried={moved}", status_code=303)


@router.get("/admin/workers", response_class=HTMLResponse)
async def workers(
    request: Request, principal: auth.Principal = Depends(access.page_principal)
) -> HTMLResponse:
    rt = access.runtime(request)
    data = await status_model.collect(rt.pool, rt.settings, dimensions=rt.dimensions, history=False)
    return _page(request, "workers.html", principal, s=data)


@router.get("/admin/search", response_class=HTMLResponse)
async def search_page(
    request: Request,
    principal: auth.Principal = Depends(access.page_principal),
    q: str = Query("", max_length=clip_search.MAX_QUERY_CHARS),
    mode: str = Query("hybrid", max_length=10),
) -> HTMLResponse:
    rt = access.runtime(request)
    results: list[dict[str, Any]] = []
    degraded: list[str] = []
    error = None
    if q.strip():
        try:
            outcome = await clip_search.search_detailed(
                rt.reader,
                rt.service_for if rt.service is not None else None,
                q,
                params=core.Params(mode=_mode_or_hybrid(mode), limit=20),
                filters=clip_search.Filters(include_nsfw=True),
            )
            results, degraded = outcome.results, outcome.degraded
        except clip_search.InvalidQuery as exc:
            error = str(exc)
        except Exception as exc:  # the page reports it; a 500 would hide what went wrong
            error = f"search failed: {type(exc).__name__}"
    return _page(
        request,
        "search.html",
        principal,
        q=q,
        mode=mode,
        modes=core.MODES,
        results=results,
        degraded=degraded,
        error=error,
    )
