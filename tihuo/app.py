"""The ASGI application: GraphQL (and GraphiQL) at /graphql, /healthz, /metrics, downloads, and the
HTTP edge (tihuo/edge.py) around them all."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from core.db import database_from_settings
from core.keys import Keys
from core.messages import pick_locale, render
from core.settings import Settings, load_settings
from schema.root import build_schema
from services import downloads, metrics, order_events, worker
from services import provisioning_callback as provisioning_callback_service
from services.notifiers import notifier_from_settings
from services.provisioners import provisioner_from_settings
from services.runtime import Runtime
from services.signed_http import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tihuo import graphiql, preflight
from tihuo.edge import (
    EdgeMiddleware,
    compression_middleware,
    cors_middleware,
    error_body,
    proxy_middleware,
)
from tihuo.graphql_view import TihuoGraphQL
from tihuo.observability import configure_logging
from tihuo.persisted import PersistedDocuments, load_manifest

log = logging.getLogger("tihuo.app")
# how long start-up waits for the LISTEN connection before serving anyway
LISTEN_WAIT_SECONDS = 10
_HTTP_CODES = {404: ("NOT_FOUND", "http.not_found"), 405: ("METHOD_NOT_ALLOWED", "http.method")}


def _json_error(request: Request, status: int, code: str, key: str) -> Response:
    message = render(key, pick_locale(request.headers.get("accept-language")))
    return Response(
        error_body(code, message),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path, a method a route does not take) as JSON."""
    assert isinstance(exc, HTTPException)
    code, key = _HTTP_CODES.get(exc.status_code, ("BAD_REQUEST", "http.bad_request"))
    response = _json_error(request, exc.status_code, code, key)
    response.headers.update(exc.headers or {})
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    """A bug outside GraphQL (which masks its own): logged with the request id, answered as JSON."""
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    return _json_error(request, 500, "INTERNAL_SERVER_ERROR", "INTERNAL")


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(
        db=database_from_settings(settings), settings=settings, keys=Keys.from_secret(settings.secret)
    )


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start_worker: bool = False
) -> Starlette:
    """The app for `settings` (read from the environment when absent), or around a ready runtime (tests).
    With `start_worker` the lifespan also runs the provisioning worker in-process (`tihuo serve`).
    Called with nothing (`uvicorn --factory tihuo.app:create_app`) it also sets up logging."""
    owns_runtime = runtime is None
    if runtime is None:
        # as a uvicorn factory there is no caller to tell: a bad setting or data folder exits with a line
        with preflight.exit_on_startup_error():
            if settings is None:
                settings = load_settings()
                configure_logging(settings.log_level)
            preflight.check_data_dir(settings)
            runtime = build_runtime(settings)
    rt = runtime
    config = rt.settings
    schema = build_schema(
        max_depth=config.query_max_depth,
        max_aliases=config.query_max_aliases,
        max_tokens=config.query_max_tokens,
        max_cost=config.query_max_cost,
        introspection_signed_in=config.introspection == "signed-in",
    )
    trusted = None if config.trusted_documents is None else load_manifest(config.trusted_documents)
    persisted = PersistedDocuments(schema.documents, trusted, config.trusted_documents_only)

    async def healthz(_: Request) -> JSONResponse:
        """503 when the database fails. With portal sign-in on, `portalKeys` says whether the portal's
        signing keys could be fetched; when not, portal tokens are refused (fail closed) and the
        status is "degraded" but still 200: local accounts work, and another process would fare no
        better, so a load balancer gains nothing by taking this one out."""
        database = await preflight.database_health(rt.db)
        if database != "ok":
            return JSONResponse({"status": "unavailable", "database": database}, status_code=503)
        body = {"status": "ok", "database": "ok"}
        if rt.portal_tokens is not None:
            body["portalKeys"] = await rt.portal_tokens.health()
            if body["portalKeys"] != "ok":
                body["status"] = "degraded"
        return JSONResponse(body)

    async def download(request: Request) -> Response:
        address = request.client.host if request.client else None
        claimed = await downloads.claim_download(rt, request.path_params["token"], address)
        if claimed is None:
            return _json_error(request, 404, "NOT_FOUND", "http.not_found")
        return StreamingResponse(
            downloads.stream(rt, claimed),
            media_type=claimed.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{claimed.filename}"',
                "Cache-Control": "no-store",
            },
        )

    async def metrics_page(request: Request) -> Response:
        """Prometheus metrics (services.metrics), open like /healthz: scrapers reach it from inside the
        network, it carries counts only (no codes, users or orders), and a bearer token would only
        move the secret into every scraper's config. Where the port is reachable from outside, turn
        it off with TIHUO_METRICS_ENABLED=false (it then answers 404) or block the path at the proxy."""
        body, content_type = await metrics.exposition(rt, request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    async def provisioning_callback(request: Request) -> Response:
        """The platform's signed report of a task's end (services/provisioning_callback.py)."""
        try:
            result = await provisioning_callback_service.receive_callback(
                rt,
                await request.body(),
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
            )
        except provisioning_callback_service.CallbackRefused:
            return _json_error(request, 401, "UNAUTHENTICATED", "http.unsigned")
        except provisioning_callback_service.CallbackInvalid:
            return _json_error(request, 400, "BAD_REQUEST", "http.callback_invalid")
        except provisioning_callback_service.UnknownTask:
            return _json_error(request, 404, "NOT_FOUND", "http.not_found")
        return JSONResponse({"applied": result.applied}, headers={"Cache-Control": "no-store"})

    # PostgreSQL: the process's one connection LISTENing for order changes (services.order_events)
    listener = None if rt.db.is_sqlite else order_events.relay(rt.db)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if owns_runtime:
            # the database this app opened itself (a runtime handed in is its giver's to check)
            try:
                await preflight.check_database(rt.db, need_migrated=True)
            except BaseException:
                await rt.db.dispose()
                raise
        # What start-up made (modules, the schema, the runtime: most of the heap) lives as long as the
        # process. Kept out of the collector's way, a full collection takes 3 ms instead of 50, which
        # had been the whole of a preview's p99 (bench/redeem.py). Garbage is collected first, so
        # none is kept for good; shutdown gives the objects back.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        relaying = None
        if listener is not None:
            # live subscriptions hear of changes made by any process through one LISTEN connection
            relaying = asyncio.create_task(listener.run(), name="order-notices")
            try:
                await asyncio.wait_for(listener.listening.wait(), LISTEN_WAIT_SECONDS)
            except TimeoutError:
                # it keeps trying; once it listens, every subscriber reads its orders again
                log.warning("not yet listening for order changes", extra={"event": "notify.late"})
        running = None
        if start_worker:
            running = asyncio.create_task(
                worker.run_worker(
                    rt,
                    provisioner_from_settings(rt),
                    notifier_from_settings(rt),
                    worker_id=worker.default_worker_id(),
                    stop=stop,
                    poll_seconds=config.worker_poll_seconds,
                ),
                name="provisioning-worker",
            )
        try:
            yield
        finally:
            if running is not None:
                stop.set()
                # the worker closes its provisioner's and notifier's connections as it returns
                await running
            if rt.portal_tokens is not None:
                await rt.portal_tokens.aclose()
            if relaying is not None:
                relaying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relaying
            if owns_runtime:
                await rt.db.dispose()
            gc.unfreeze()

    view = TihuoGraphQL(schema, rt, persisted)
    app = Starlette(
        routes=[
            Route("/graphql", view, methods=["GET", "POST"]),
            # subscriptions (graphql-transport-ws) on the same path
            WebSocketRoute("/graphql", view),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/downloads/{token}", download, methods=["GET"]),
            Route("/provisioning/callback", provisioning_callback, methods=["POST"]),
            *([Route("/metrics", metrics_page, methods=["GET"])] if config.metrics_enabled else []),
            graphiql.static_mount(),
        ],
        middleware=[
            # forwarded headers only from TIHUO_FORWARDED_ALLOW_IPS's proxies (none by default)
            *proxy_middleware(config.trusted_proxies),
            # outside the edge, so its refusals (413) are readable by an allowed origin's page too
            *cors_middleware(config.cors_allowed),
            Middleware(EdgeMiddleware, max_body_bytes=config.max_body_bytes),
            compression_middleware(),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    # a failed start-up check reaches the server as its one line, not as a traceback
    app.add_middleware(preflight.ReportStartupFailure)
    app.state.runtime = rt
    app.state.schema = schema
    app.state.listener = listener
    return app
