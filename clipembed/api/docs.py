"""The OpenAPI pages, ``/docs`` (Swagger UI) and ``/redoc``, served without the internet.

FastAPI's defaults load their JavaScript and CSS from a CDN, so on a closed network the pages
stay blank. :func:`install` serves the same bundles from the installed ``fastapi-offline``
package (swagger-ui 5 and redoc 2's standalone bundle, as files; its app factory is not used)
under ``/static/docs`` and registers the two pages pointing at them, same-origin only. Create the
app with ``docs_url=None, redoc_url=None`` and call ``install(app)``.

Both pages carry a Content-Security-Policy that confines every load to the app's own origin, so
the browser itself refuses anything else: redoc's footer hard-codes a logo image on its CDN,
which is then never requested (the image hides itself when it fails; the pages work fully).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_PATH = "/static/docs"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
# Swagger UI and redoc need inline scripts/styles (their bootstrapping, styled-components) and
# redoc's search runs in a blob: worker; nothing loads from anywhere but this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'self'",
    )
)
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_dir() -> Path:
    """The directory holding the bundles (raises if the package lacks one of them)."""
    directory = Path(str(resources.files("fastapi_offline") / "static"))
    missing = [name for name in ASSETS if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline ships no {', '.join(missing)} in {directory}")
    return directory


def confined(response: HTMLResponse) -> HTMLResponse:
    """The page with :data:`CONTENT_SECURITY_POLICY`: nothing loads from another origin."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def install(app: FastAPI) -> None:
    """Mount the assets and register ``/docs``, its OAuth2 redirect, and ``/redoc``."""
    app.mount(STATIC_PATH, StaticFiles(directory=assets_dir()), name="docs-static")
    openapi_url = app.openapi_url
    if openapi_url is None:  # no schema, nothing to show
        return
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return confined(
            get_swagger_ui_html(
                openapi_url=base + openapi_url,
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=base + oauth2_redirect_url if oauth2_redirect_url else None,
                swagger_js_url=f"{base}{STATIC_PATH}/swagger-ui-bundle.js",
                swagger_css_url=f"{base}{STATIC_PATH}/swagger-ui.css",
                swagger_favicon_url=f"{base}{STATIC_PATH}/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        )

    if oauth2_redirect_url:

        @app.get(oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return confined(
            get_redoc_html(
                openapi_url=base + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{base}{STATIC_PATH}/redoc.standalone.js",
                redoc_favicon_url=f"{base}{STATIC_PATH}/favicon.png",
                with_google_fonts=False,  # fonts.googleapis.com is another origin
            )
        )
