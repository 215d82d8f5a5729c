"""Getting into the console: who is asking, signing in and out, and what a refusal looks like.

- :func:`identify` finds the principal behind ``Authorization: Bearer`` or the session cookie.
  A wrong Bearer token is a failure for :mod:`clipembed.admin.throttle` (401, or 429 with
  ``Retry-After`` past its limits); a valid one always passes.
- Routes take :func:`api_principal` (JSON: 401) or :func:`page_principal` (a browser goes to
  the sign-in page, told its session ended when it had one) as a dependency, and read a form
  only afterwards with :func:`read_form`: the body of a POST is never read for someone who may
  not send it, and a form never takes a file part (nothing is ever spooled).
- The sign-in page shows a message only from :data:`SIGN_IN_MESSAGES`, by code
  (``?error=expired``): an unknown code shows nothing, so a link cannot put words on the page.
- Redirects go to paths of the console only (:func:`safe_next`), and are relative.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from clipembed import client_limits
from clipembed import runtime as runtime_mod
from clipembed.admin import auth, throttle

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: the console's pages (the sign-in page is the first to need them)
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

NO_TOKEN = (
    "no admin token exists yet: create one with `clipembed admin token create --name YOU` "
    "and sign in with it"
)
#: what the sign-in page may say, by code; nothing else is ever shown there
SIGN_IN_MESSAGES = {
    "invalid": "That token is not valid.",
    "throttled": "Too many failed attempts: wait a minute before the next one. A valid token "
    "still signs in.",
    "expired": "Your session has ended: sign in again.",
}
MAX_TOKEN = 200  # characters; a token is 46
MAX_NEXT = 500
FORM_FIELDS = 600  # the failures page posts up to 500 ids


def runtime(request: Request) -> runtime_mod.Runtime:
    rt: runtime_mod.Runtime = request.app.state.runtime
    return rt


def client(request: Request) -> str:
    """The client's address as :mod:`clipembed.api.clients` resolved it (proxies believed
    only when trusted): the throttles and the logs use this one."""
    return request.client.host if request.client else "unknown"


def safe_next(path: str | None) -> str:
    """Only a path of the console itself: never an open redirect."""
    if not path or not path.startswith("/admin") or path.startswith("//") or "\\" in path:
        return "/admin"
    return path


async def read_form(request: Request, *, max_fields: int = 10) -> FormData:
    """The request's form, read once credentials are checked: no file part, few fields."""
    return await request.form(max_files=0, max_fields=max_fields)


def field(form: FormData, name: str, max_chars: int) -> str | None:
    """A text field; None when absent, a file, or longer than ``max_chars``."""
    value = form.get(name)
    if not isinstance(value, str) or len(value) > max_chars:
        return None
    return value


# ------------------------------------------------------------------------------ who is asking


class NeedsSignIn(Exception):
    """A page was asked for without credentials: the browser goes to the sign-in page."""

    def __init__(self, next_path: str, *, no_tokens: bool = False, expired: bool = False):
        self.next_path = next_path
        self.no_tokens = no_tokens
        self.expired = expired


class Unauthorized(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


class Throttled(Exception):
    """Too many failures from this client (or in all): 429 with Retry-After."""

    def __init__(self, wait: float) -> None:
        self.wait = wait


async def identify(request: Request) -> auth.Principal | None:
    """The principal behind a Bearer token or a session cookie, or None.

    A wrong Bearer token counts as a failure; past the throttle's limits it raises
    :class:`Throttled`. A stale session cookie does not count: browsers keep them.
    """
    pool = runtime(request).pool
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            return await auth.check_token(pool, token.strip())
        except auth.AuthError:
            wait = await throttle.of(request).failed(client(request), "bearer")
            if wait > 0:
                raise Throttled(wait) from None
            return None
    session = request.cookies.get(auth.SESSION_COOKIE)
    if session:
        try:
            return await auth.check_session(pool, session)
        except auth.AuthError:
            return None
    return None


async def api_principal(request: Request) -> auth.Principal:
    principal = await identify(request)
    if principal is None:
        detail = NO_TOKEN if not await auth.any_token(runtime(request).pool) else "unauthorized"
        raise Unauthorized(detail)
    return principal


async def page_principal(request: Request) -> auth.Principal:
    principal = await identify(request)
    if principal is None:
        no_tokens = not await auth.any_token(runtime(request).pool)
        expired = auth.SESSION_COOKIE in request.cookies
        raise NeedsSignIn(request.url.path, no_tokens=no_tokens, expired=expired)
    return principal


def unauthorized_json(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def register_handlers(app: FastAPI) -> None:
    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return unauthorized_json(exc.detail)

    @app.exception_handler(Throttled)
    async def _throttled(request: Request, exc: Throttled) -> JSONResponse:
        return JSONResponse(
            {"detail": "too many failed attempts: retry later (a valid token still works)"},
            status_code=429,
            headers={"Retry-After": client_limits.retry_after(exc.wait)},
        )

    @app.exception_handler(NeedsSignIn)
    async def _sign_in(request: Request, exc: NeedsSignIn) -> Response:
        if exc.no_tokens:
            return templates.TemplateResponse(
                request, "no_tokens.html", {"message": NO_TOKEN}, status_code=401
            )
        target = f"/admin/login?next={quote(safe_next(exc.next_path))}"
        return RedirectResponse(target + ("&error=expired" if exc.expired else ""), 303)


# ------------------------------------------------------------------------------ sign-in


def _login_page(
    request: Request,
    next_path: str,
    code: str | None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"next": safe_next(next_path), "error": SIGN_IN_MESSAGES.get(code or "")},
        status_code=status_code,
        headers=headers,
    )


@router.get("/admin/login")
async def login_page(request: Request, next: str = "/admin", error: str | None = None) -> Response:
    if not await auth.any_token(runtime(request).pool):
        return templates.TemplateResponse(
            request, "no_tokens.html", {"message": NO_TOKEN}, status_code=401
        )
    return _login_page(request, next, error)


@router.post("/admin/login")
async def login(request: Request) -> Response:
    """Sign in with a token: a valid one always gets in; a wrong one is a counted failure."""
    rt = runtime(request)
    form = await read_form(request)
    token = (field(form, "token", MAX_TOKEN) or "").strip()
    next_path = safe_next(field(form, "next", MAX_NEXT))
    principal = None
    if token:
        try:
            principal = await auth.check_token(rt.pool, token)
        except auth.AuthError:
            principal = None
    if principal is None:
        wait = await throttle.of(request).failed(client(request), "signin")
        if wait > 0:
            retry = {"Retry-After": client_limits.retry_after(wait)}
            return _login_page(request, next_path, "throttled", status_code=429, headers=retry)
        return _login_page(request, next_path, "invalid", status_code=401)
    hours = rt.settings.clipembed_admin_session_hours
    session, _ = await auth.open_session(rt.pool, principal, hours=hours)
    response = RedirectResponse(next_path, status_code=303)
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
    logger.info("admin signed in", extra={"token": principal.name, "client": client(request)})
    return response


@router.post("/admin/logout")
async def logout(request: Request, principal: auth.Principal = Depends(page_principal)) -> Response:
    form = await read_form(request)
    if not auth.csrf_ok(principal, field(form, "csrf", MAX_TOKEN)):
        return csrf_refused(request)
    session = request.cookies.get(auth.SESSION_COOKIE)
    if session:
        await auth.close_session(runtime(request).pool, session)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def csrf_refused(request: Request) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {"title": "Refused", "message": "This form has expired. Reload the page and try again."},
        status_code=403,
    )
