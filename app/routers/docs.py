"""The documentation pages, /docs (Swagger UI) and /redoc (ReDoc), with every asset they load
served by the app itself from the pinned `fastapi-offline` package: no CDN, so they work
offline and under a Content-Security-Policy that allows only the app's own origin."""

import importlib.util
import json
import secrets
from functools import cache
from importlib.metadata import version
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from app.internal.errors import NotFound

ASSET_PACKAGE = "fastapi_offline"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)


@cache
def asset_directory() -> Path:
    # Found without importing the package, whose import would build an app of its own.
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{ASSET_PACKAGE} is not installed: pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def asset_version() -> str:
    """Part of every asset's URL, so a new package version is never served from a stale cache."""
    return version("fastapi-offline")


def content_security_policy(nonce: str) -> str:
    """The app's own origin only; the nonce admits the page's one inline script and the styles
    ReDoc writes. `data:` images are the icons inside Swagger UI's stylesheet; ReDoc's search
    runs in a worker made from a `blob:` URL of this page (so of the same origin)."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'nonce-{nonce}'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _script_json(value: object) -> str:
    """JSON that cannot end the <script> element it is written into."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page(request: Request, *, title: str, head: str, body: str, nonce: str) -> HTMLResponse:
    html = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{asset_url(request, "favicon.png")}">
{head}
</head>
<body>
{body}
</body>
</html>
"""
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": content_security_policy(nonce),
            "Referrer-Policy": "no-referrer",
        },
    )


def root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def asset_url(request: Request, name: str) -> str:
    return f"{root_path(request)}/docs/assets/{asset_version()}/{name}"


def openapi_url(request: Request) -> str:
    return f"{root_path(request)}{request.app.openapi_url}"


@router.get("/docs")
def read_swagger_ui(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(18)
    options = {
        "url": openapi_url(request),
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "showExtensions": True,
        "showCommonExtensions": True,
        "persistAuthorization": False,
        "validatorUrl": None,
    }
    script = (
        f"const options = {_script_json(options)};\n"
        "options.presets = [\n"
        "  SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset\n];\n"
        "window.ui = SwaggerUIBundle(options);"
    )
    return _page(
        request,
        title=f"{request.app.title} - Swagger UI",
        head=f'<link rel="stylesheet" href="{asset_url(request, "swagger-ui.css")}">',
        body=(
            '<div id="swagger-ui"></div>\n'
            f'<script src="{asset_url(request, "swagger-ui-bundle.js")}"></script>\n'
            f'<script nonce="{nonce}">\n{script}\n</script>'
        ),
        nonce=nonce,
    )


@router.get("/redoc")
def read_redoc(request: Request) -> HTMLResponse:
    nonce = secrets.token_urlsafe(18)
    # ReDoc gives the nonce to the <style> elements it writes.
    script = (
        f"Redoc.init({_script_json(openapi_url(request))}, {_script_json({'nonce': nonce})}, "
        'document.getElementById("redoc"));'
    )
    return _page(
        request,
        title=f"{request.app.title} - ReDoc",
        head=f'<style nonce="{nonce}">body {{ margin: 0; padding: 0; }}</style>',
        body=(
            '<div id="redoc"></div>\n'
            f'<script src="{asset_url(request, "redoc.standalone.js")}"></script>\n'
            f'<script nonce="{nonce}">\n{script}\n</script>'
        ),
        nonce=nonce,
    )


@router.get("/docs/assets/{release}/{name}")
def read_docs_asset(release: str, name: str) -> FileResponse:
    media_type = ASSET_TYPES.get(name)
    if media_type is None or release != asset_version():
        raise NotFound("No such documentation asset")
    return FileResponse(
        asset_directory() / name,
        media_type=media_type,
        # The URL names the package version: what it serves never changes.
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
