"""GraphQL over HTTP at /graphql: Strawberry's ASGI view with tihuo's context, orjson, our GraphiQL
page, queries over GET with a Cache-Control that fits each answer, documents named by their hash
(tihuo/persisted.py), and every malformed request answered as JSON with a code and a fitting 4xx
status (RULES-v2 §6) instead of Strawberry's plain-text refusals. Subscriptions over
graphql-transport-ws on the same path (RULES-v2 §4): signed in by the `connection_init` payload's
`Authorization`, pinged while idle, every message a text frame."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError, specified_rules
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType
from strawberry.utils.operation import get_operation_type

from core.messages import render
from resolvers.context import Context, build_context
from schema.caching import catalog_only
from schema.documents import CACHEABLE_BYTES
from services.runtime import Runtime
from tihuo import graphiql
from tihuo.edge import RequestRefused, send_refusal
from tihuo.persisted import PersistedDocuments, requested_hash, with_document_id

log = logging.getLogger("tihuo.graphql")
# the rules Strawberry validates with (ExecutionContext.validation_rules' default)
_RULES = tuple(specified_rules)
# Strawberry's own refusals, by status, for the few it still raises itself (the reason is English)
_STRAWBERRY_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
}
# every answer but a catalog read's over GET: someone's private data, kept by no cache
PRIVATE = "private, no-store"
# how a request names a trusted document by its hash besides APQ's extension: the GraphQL-over-HTTP
# persisted documents proposal, and Relay's network layers
_DOCUMENT_IDS = ("documentId", "doc_id")
# query parameters that make a GET a GraphQL request rather than a visit to GraphiQL
_REQUEST_PARAMETERS = ("query", "extensions", *_DOCUMENT_IDS)


class TextFrames(ASGIWebSocketAdapter):
    """graphql-transport-ws messages are text frames; the view's orjson encoder gives bytes."""

    async def send_json(self, message: Any) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as gone:
            raise WebSocketDisconnected from gone


class PingingHandler(BaseGraphQLTransportWSHandler):
    """Strawberry's graphql-transport-ws handler, sending a `ping` every TIHUO_WS_PING_SECONDS once
    the connection is acknowledged, so proxies keep an idle connection open (clients answer pong)."""

    pinger: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        seconds = self.view.runtime.settings.ws_ping_seconds  # type: ignore[attr-defined]
        if self.connection_acknowledged and seconds and self.pinger is None:
            self.pinger = asyncio.create_task(self._ping(seconds), name="ws-ping")

    async def _ping(self, seconds: float) -> None:
        try:
            while True:
                await asyncio.sleep(seconds)
                await self.send_message({"type": "ping"})
        except (WebSocketDisconnected, RuntimeError):
            return  # the connection is closing: its handler ends too

    async def shutdown(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
        await super().shutdown()


class TihuoGraphQL(GraphQL):
    websocket_adapter_class = TextFrames  # type: ignore[assignment]
    graphql_transport_ws_handler_class = PingingHandler

    def __init__(self, schema: Any, runtime: Runtime, persisted: PersistedDocuments | None = None) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.runtime = runtime
        self.persisted = persisted or PersistedDocuments(schema.documents, None)
        # a page may open a WebSocket (subscriptions) from the origins it may call the API from
        self.allowed_origins = frozenset(runtime.settings.cors_allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except RequestRefused as refused:
            await send_refusal(scope, send, refused)
            return
        except HTTPException as refused:
            code = _STRAWBERRY_CODES.get(refused.status_code, "BAD_REQUEST")
            await send_refusal(
                scope,
                send,
                RequestRefused(refused.status_code, code, "http.bad_request", reason=refused.reason),
            )
            return
        await response(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        return await build_context(self.runtime, request)

    async def on_ws_connect(self, context: Context) -> UnsetType:  # type: ignore[override]
        """`connection_init`: its payload's `Authorization` signs the connection in, as the header
        signs a request in. None leaves it signed out; one that signs nobody in is refused (4403)."""
        authorization = (context.connection_params or {}).get("Authorization")
        await context.sign_in(authorization)
        if authorization is not None and context.caller.viewer is None:
            raise ConnectionRejectionError()
        return UNSET

    def should_render_graphql_ide(self, request: Any) -> bool:
        # a GET naming a document by its hash alone has no `query`, and fetch() accepts */*
        if any(request.query_params.get(name) is not None for name in _REQUEST_PARAMETERS):
            return False
        return super().should_render_graphql_ide(request)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def parse_json(self, data: str | bytes) -> Any:
        # orjson refuses bytes that are not UTF-8 and nesting past 1024 levels, as JSON errors
        try:
            return self.decode_json(data)
        except orjson.JSONDecodeError:
            raise RequestRefused(400, "BAD_REQUEST", "http.bad_json") from None

    async def parse_http_body(self, request: Any) -> Any:
        document_id = None
        if request.method == "POST":
            content_type, _ = parse_content_type(request.content_type or "")
            if content_type != "application/json":
                raise RequestRefused(415, "UNSUPPORTED_MEDIA_TYPE", "http.media_type")
            body = await request.get_body()
            if body.lstrip()[:1] == b"[":
                raise RequestRefused(400, "BAD_REQUEST", "http.batch")
            # Strawberry reads only query, variables, operationName and extensions; the rare body
            # naming its document otherwise is read a second time for that name
            if b'"documentId"' in body or b'"doc_id"' in body:
                document_id = _document_id(self.parse_json(body))
        else:
            document_id = _document_id(request.query_params)
        data = await super().parse_http_body(request)
        if document_id is not None:
            data.extensions = with_document_id(data.extensions, document_id)
        return data

    async def execute_single(
        self,
        request: Any,
        request_adapter: Any,
        sub_response: Any,
        context: Any,
        root_value: Any,
        request_data: Any,
    ) -> ExecutionResult:  # type: ignore[override]
        resolved = self.persisted.resolve(
            request_data.query, requested_hash(request_data.extensions), context.caller
        )
        if resolved is not None:
            request_data.query = resolved.text
            if resolved.trusted is not None:
                context.operation_label = resolved.trusted.label(request_data.operation_name)
        query = request_data.query
        if _holds_nul(query) or _holds_nul(request_data.variables):
            # no text column of PostgreSQL can hold U+0000: refused here, for every field at once
            raise RequestRefused(400, "BAD_REQUEST", "http.nul")
        if isinstance(query, str):
            # a long document not seen before is parsed and validated on a thread (schema.documents)
            context.prepared = await self.schema.documents.prepare(self.schema._schema, query, _RULES)
            if self._is_subscription(context.prepared, query, request_data.operation_name):
                # Strawberry would run it as a query, and a stream is no field value: refused plainly
                raise RequestRefused(400, "BAD_REQUEST", "http.subscription_over_http")
        seconds = self.runtime.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                result = await super().execute_single(
                    request=request,
                    request_adapter=request_adapter,
                    sub_response=sub_response,
                    context=context,
                    root_value=root_value,
                    request_data=request_data,
                )
        except TimeoutError:
            # its transaction, if one was open, rolled back when the work was cancelled
            log.warning("request stopped after %g s", seconds, extra={"event": "request.timeout"})
            message = render("REQUEST_TIMEOUT", context.locale, seconds=f"{seconds:g}")
            return ExecutionResult(
                data=None, errors=[GraphQLError(message, extensions={"code": "REQUEST_TIMEOUT"})]
            )
        except HTTPException as refused:
            cause = refused.__cause__
            if isinstance(cause, InvalidOperationTypeError):
                key = (
                    "http.method" if cause.operation_type is OperationType.QUERY else "http.mutation_over_get"
                )
                raise RequestRefused(405, "METHOD_NOT_ALLOWED", key) from None
            if isinstance(cause, MissingQueryError):
                raise RequestRefused(400, "BAD_REQUEST", "http.no_query") from None
            if isinstance(cause, CannotGetOperationTypeError):
                raise RequestRefused(400, "BAD_REQUEST", "http.bad_request", reason=refused.reason) from None
            raise
        if request_adapter.method == "GET":
            self._may_be_kept(sub_response, query, request_data.operation_name, result)
        return result

    def _is_subscription(self, prepared: Any, query: str, operation_name: str | None) -> bool:
        """Whether the operation asked for is a subscription (these go over the WebSocket). A
        document that does not parse or names no operation is left for Strawberry to refuse."""
        if "subscription" not in query:
            return False
        document = (prepared or self.schema.documents.get(query)).document
        if document is None:
            return False
        try:
            return get_operation_type(document, operation_name) is OperationType.SUBSCRIPTION
        except RuntimeError:  # no operation of that name: Strawberry says so
            return False

    def _may_be_kept(self, sub_response: Any, query: str, operation_name: str | None, result: Any) -> None:
        """A GET's answer made only of catalog reads, without errors, may be kept by the asker's own
        cache for TIHUO_CATALOG_CACHE_SECONDS (private: it was asked with a token). Caches must key
        it by the token and the language too. A POST's answer is never kept by caches anyway."""
        seconds = self.runtime.settings.catalog_cache_seconds
        if not seconds or result.errors or not isinstance(query, str) or len(query) > CACHEABLE_BYTES:
            return
        document = self.schema.documents.get(query).document
        if document is not None and catalog_only(document, operation_name, self.schema.catalog_fields):
            sub_response.headers["cache-control"] = f"private, max-age={seconds}"
            sub_response.headers["vary"] = "Authorization, Accept-Language"

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = super().create_response(response_data, sub_response)
        # answers hold private data (a member's orders, an admin's cards): never kept by a cache,
        # unless _may_be_kept said otherwise
        response.headers.setdefault("cache-control", PRIVATE)
        return response

    async def render_graphql_ide(self, request: Request) -> Response:
        # our own page and assets (tihuo/graphiql.py) instead of Strawberry's, which loads them from a CDN
        return graphiql.page_response(request)


def _document_id(fields: Any) -> object:
    """What a request's `documentId` or `doc_id` says, if it has one (checked in tihuo.persisted)."""
    if not hasattr(fields, "get"):
        return None
    return next((fields.get(name) for name in _DOCUMENT_IDS if fields.get(name) is not None), None)


def _holds_nul(value: object, depth: int = 0) -> bool:
    """A NUL character in a text: raw, or written `\\u0000` in the document's string literals."""
    if isinstance(value, str):
        return "\x00" in value or "\\u0000" in value
    if depth > 1024:  # orjson refused anything nested deeper already
        return False
    if isinstance(value, dict):
        return any(_holds_nul(key, depth + 1) or _holds_nul(item, depth + 1) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item, depth + 1) for item in value)
    return False
