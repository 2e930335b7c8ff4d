"""The ASGI application: GraphQL (and GraphiQL) at /graphql, /healthz, /metrics, request ids on everything."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from resolvers.context import Context, build_context
from schema.root import build_schema
from services import downloads, metrics, provisioning
from services.keys import Keys
from services.runtime import Runtime
from tihuo import graphiql, preflight
from tihuo.db import database_from_settings
from tihuo.observability import RequestIdMiddleware
from tihuo.settings import Settings, load_settings

log = logging.getLogger("tihuo.app")


class TihuoGraphQL(GraphQL):
    def __init__(self, schema: Any, runtime: Runtime) -> None:
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=False)
        self.runtime = runtime

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        assert isinstance(request, Request)
        return await build_context(self.runtime, request)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def render_graphql_ide(self, request: Request) -> Response:
        # our own page and assets (tihuo/graphiql.py) instead of Strawberry's, which loads them from a CDN
        return graphiql.page_response(request)


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(
        db=database_from_settings(settings), settings=settings, keys=Keys.from_secret(settings.secret)
    )


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start_worker: bool = False
) -> Starlette:
    """The app for `settings` (read from the environment when absent), or around a ready runtime (tests).
    With `start_worker` the lifespan also runs the provisioning worker in-process (`tihuo serve`)."""
    owns_runtime = runtime is None
    if runtime is None:
        # as a uvicorn factory there is no caller to tell: a bad setting or data folder exits with a line
        with preflight.exit_on_startup_error():
            settings = settings or load_settings()
            preflight.check_data_dir(settings)
            runtime = build_runtime(settings)
    rt = runtime
    config = rt.settings
    schema = build_schema(
        max_depth=config.query_max_depth,
        max_aliases=config.query_max_aliases,
        max_tokens=config.query_max_tokens,
    )

    async def healthz(_: Request) -> JSONResponse:
        database = await preflight.database_health(rt.db)
        if database != "ok":
            return JSONResponse({"status": "unavailable", "database": database}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def download(request: Request) -> Response:
        address = request.client.host if request.client else None
        claimed = await downloads.claim_download(rt, request.path_params["token"], address)
        if claimed is None:
            return PlainTextResponse("Not Found", status_code=404)
        return StreamingResponse(
            downloads.stream_codes(rt, claimed),
            media_type="text/plain; charset=utf-8",
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
        worker = None
        if start_worker:
            worker = asyncio.create_task(
                provisioning.run_worker(
                    rt,
                    provisioning.provisioner_from_settings(rt),
                    provisioning.notifier_from_settings(rt),
                    worker_id=provisioning.default_worker_id(),
                    stop=stop,
                    poll_seconds=config.worker_poll_seconds,
                ),
                name="provisioning-worker",
            )
        try:
            yield
        finally:
            if worker is not None:
                stop.set()
                await worker
            if owns_runtime:
                await rt.db.dispose()
            gc.unfreeze()

    app = Starlette(
        routes=[
            Route("/graphql", TihuoGraphQL(schema, rt), methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/downloads/{token}", download, methods=["GET"]),
            *([Route("/metrics", metrics_page, methods=["GET"])] if config.metrics_enabled else []),
            graphiql.static_mount(),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    # a failed start-up check reaches the server as its one line, not as a traceback
    app.add_middleware(preflight.ReportStartupFailure)
    app.state.runtime = rt
    app.state.schema = schema
    return app
