"""GraphiQL served entirely by the app: the page (`tihuo/graphiql.html`) and its assets, which ship
inside the package (`tihuo/static/graphiql/`, see the README there), so no CDN is ever needed."""

from __future__ import annotations

import hashlib
import html
import os
import re
from functools import cache
from importlib import resources

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

STATIC_PATH = "/static/graphiql"
_ASSETS = resources.files("tihuo") / "static" / "graphiql"
_PAGE = resources.files("tihuo") / "graphiql.html"
_ASSET_REF = re.compile(r"\{\{asset:([A-Za-z0-9._-]+)\}\}")

# What the page may load: only this origin. GraphiQL needs inline styles (its editors set style
# attributes) and data: URLs for the fonts its CSS embeds; no inline script and no eval.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


class _AssetFiles(StaticFiles):
    """The assets; asked for with the `?v=<content hash>` the page adds, they are cached for a year."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if b"v=" in scope.get("query_string", b""):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def static_mount() -> Mount:
    """`/static/graphiql/…`, gzipped (graphiql.min.js is 3.5 MB, about 0.7 MB compressed)."""
    files: ASGIApp = _AssetFiles(packages=[("tihuo", "static/graphiql")])
    return Mount(STATIC_PATH, app=GZipMiddleware(files, minimum_size=1024, compresslevel=6), name="graphiql")


@cache
def _page_template() -> str:
    """The page with each `{{asset:NAME}}` turned into `{{root}}/static/graphiql/NAME?v=<hash>`."""

    def url(match: re.Match[str]) -> str:
        name = match.group(1)
        digest = hashlib.sha256((_ASSETS / name).read_bytes()).hexdigest()[:12]
        return f"{{{{root}}}}{STATIC_PATH}/{name}?v={digest}"

    return _ASSET_REF.sub(url, _PAGE.read_text(encoding="utf-8"))


def page_response(request: Request) -> HTMLResponse:
    root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
    return HTMLResponse(
        _page_template().replace("{{root}}", root),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
