"""The console's HTTP layer: ``/status`` (JSON) and the ``/admin`` pages. Thin on purpose.

Every route here needs credentials (:mod:`clipembed.admin.auth`): a Bearer token, or a browser
session. JSON routes answer 401 without them; pages send a browser to the sign-in page. Every
POST from a browser carries the session's CSRF token. Pages are server-rendered Jinja2 with
autoescaping (clip titles are user content) and work with JavaScript disabled.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from clipembed import runtime as runtime_mod
from clipembed.admin import auth, charts
from clipembed.admin import queries as admin_queries
from clipembed.jobs import queue
from clipembed.search import clips as clip_search
from clipembed.search import core
from clipembed.status import model as status_model

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
throttle = auth.SignInThrottle()

FAILURES_SHOWN = 500
NO_TOKEN = (
    "no admin token exists yet: create one with `clipembed admin token create --name YOU` "
    "and sign in with it"
)

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
    """Mount the console on an app: its routes, its stylesheet, the security headers."""
    app.add_middleware(SecurityHeaders)
    app.mount("/admin/static", StaticFiles(directory=str(HERE / "static")), name="admin-static")
    app.include_router(router)


# ------------------------------------------------------------------------------ who is asking


class NeedsSignIn(Exception):
    """A page was asked for without credentials: the browser goes to the sign-in page."""

    def __init__(self, next_path: str, *, no_tokens: bool = False) -> None:
        self.next_path = next_path
        self.no_tokens = no_tokens


def _runtime(request: Request) -> runtime_mod.Runtime:
    rt: runtime_mod.Runtime = request.app.state.runtime
    return rt


async def identify(request: Request) -> auth.Principal | None:
    """The principal behind a Bearer token or a session cookie, or None."""
    pool = _runtime(request).pool
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() == "bearer" and token.strip():
            return await auth.check_token(pool, token.strip())
        session = request.cookies.get(auth.SESSION_COOKIE)
        if session:
            return await auth.check_session(pool, session)
    except auth.AuthError:
        return None
    return None


async def api_principal(request: Request) -> auth.Principal:
    principal = await identify(request)
    if principal is None:
        detail = NO_TOKEN if not await auth.any_token(_runtime(request).pool) else "unauthorized"
        raise _Unauthorized(detail)
    return principal


async def page_principal(request: Request) -> auth.Principal:
    principal = await identify(request)
    if principal is None:
        no_tokens = not await auth.any_token(_runtime(request).pool)
        raise NeedsSignIn(request.url.path, no_tokens=no_tokens)
    return principal


class _Unauthorized(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


def unauthorized_json(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def register_handlers(app: FastAPI) -> None:
    @app.exception_handler(_Unauthorized)
    async def _unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
        return unauthorized_json(exc.detail)

    @app.exception_handler(NeedsSignIn)
    async def _sign_in(request: Request, exc: NeedsSignIn) -> Response:
        if exc.no_tokens:
            return templates.TemplateResponse(
                request, "no_tokens.html", {"message": NO_TOKEN}, status_code=401
            )
        return RedirectResponse(f"/admin/login?next={quote(_safe_next(exc.next_path))}", 303)


def _safe_next(path: str | None) -> str:
    """Only a path of the console itself: never an open redirect."""
    if not path or not path.startswith("/admin") or path.startswith("//") or "\\" in path:
        return "/admin"
    return path


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------------------ JSON


@router.get("/status")
async def status(
    request: Request, _: auth.Principal = Depends(api_principal), history: bool = True
) -> JSONResponse:
    rt = _runtime(request)
    data = await status_model.collect(
        rt.pool, rt.settings, dimensions=rt.dimensions, history=history
    )
    return JSONResponse(data)


# ------------------------------------------------------------------------------ sign-in


@router.get("/admin/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/admin", error: str | None = None) -> Response:
    if not await auth.any_token(_runtime(request).pool):
        return templates.TemplateResponse(
            request, "no_tokens.html", {"message": NO_TOKEN}, status_code=401
        )
    return templates.TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": error}
    )


@router.post("/admin/login")
async def login(
    request: Request,
    token: str = Form("", max_length=200),
    next: str = Form("/admin", max_length=500),
) -> Response:
    rt = _runtime(request)
    client = _client(request)
    wait = throttle.blocked_for(client)
    if wait > 0:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next), "error": f"Too many attempts: wait {wait:.0f} s."},
            status_code=429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    try:
        principal = await auth.check_token(rt.pool, token.strip())
    except auth.AuthError:
        throttle.failed(client)
        logger.warning("admin sign-in refused", extra={"client": client})
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "That token is not valid."},
            status_code=401,
        )
    throttle.succeeded(client)
    hours = rt.settings.clipembed_admin_session_hours
    session, _ = await auth.open_session(rt.pool, principal, hours=hours)
    response = RedirectResponse(_safe_next(next), status_code=303)
    secure = rt.settings.clipembed_admin_cookie_secure
    response.set_cookie(
        auth.SESSION_COOKIE,
        session,
        max_age=int(hours * 3600),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" if secure is None else secure,
        path="/",
    )
    logger.info("admin signed in", extra={"token": principal.name, "client": client})
    return response


@router.post("/admin/logout")
async def logout(
    request: Request,
    csrf: str = Form("", max_length=200),
    principal: auth.Principal = Depends(page_principal),
) -> Response:
    if not auth.csrf_ok(principal, csrf):
        return _csrf_refused(request)
    session = request.cookies.get(auth.SESSION_COOKIE)
    if session:
        await auth.close_session(_runtime(request).pool, session)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def _csrf_refused(request: Request) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {"title": "Refused", "message": "This form has expired. Reload the page and try again."},
        status_code=403,
    )


# ------------------------------------------------------------------------------ pages


def _page(request: Request, name: str, principal: auth.Principal, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"who": principal.name, "csrf": principal.csrf or "", "path": request.url.path, **context},
    )


@router.get("/admin", response_class=HTMLResponse)
async def overview(
    request: Request, principal: auth.Principal = Depends(page_principal)
) -> HTMLResponse:
    rt = _runtime(request)
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
    return _page(request, "overview.html", principal, s=data, charts=chart_list)


@router.get("/admin/failures", response_class=HTMLResponse)
async def failures(
    request: Request,
    principal: auth.Principal = Depends(page_principal),
    retried: int | None = Query(None, ge=0),
) -> HTMLResponse:
    async with _runtime(request).pool.connection() as conn:
        rows = await (await conn.execute(admin_queries.DEAD_LETTERS, (FAILURES_SHOWN,))).fetchall()
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
    request: Request,
    principal: auth.Principal = Depends(page_principal),
    csrf: str = Form("", max_length=200),
    ids: list[str] = Form(default_factory=list),
    one: str = Form("", max_length=64),
    all_: bool = Form(False, alias="all"),
    confirm: str = Form("", max_length=10),
) -> Response:
    """Retry dead letters: a selection, or all. A first POST asks for confirmation."""
    if not auth.csrf_ok(principal, csrf):
        return _csrf_refused(request)
    if one:  # a row's own button: that clip alone, whatever else is ticked
        ids = [one]
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
    async with _runtime(request).pool.connection() as conn:
        moved = await queue.replay(conn, None if all_ else chosen)
    logger.info("dead letters retried from the console", extra={"by": principal.name, "n": moved})
    return RedirectResponse(f"/admin/failures?retried={moved}", status_code=303)


@router.get("/admin/workers", response_class=HTMLResponse)
async def workers(
    request: Request, principal: auth.Principal = Depends(page_principal)
) -> HTMLResponse:
    rt = _runtime(request)
    data = await status_model.collect(rt.pool, rt.settings, dimensions=rt.dimensions, history=False)
    return _page(request, "workers.html", principal, s=data)


@router.get("/admin/search", response_class=HTMLResponse)
async def search_page(
    request: Request,
    principal: auth.Principal = Depends(page_principal),
    q: str = Query("", max_length=clip_search.MAX_QUERY_CHARS),
    mode: str = Query("hybrid", max_length=10),
) -> HTMLResponse:
    rt = _runtime(request)
    results: list[dict[str, Any]] = []
    degraded: list[str] = []
    error = None
    if q.strip():
        try:
            outcome = await clip_search.search_detailed(
                rt.reader,
                rt.service_for if rt.service is not None else None,
                q,
                params=core.Params(mode=mode if mode in core.MODES else "hybrid", limit=20),  # type: ignore[arg-type]
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
