"""The HTTP edge, before any route: request ids, the body-size limit, trusted proxies' forwarded
headers, cross-origin access (CORS), compression, headers every answer carries, and the JSON shape
of every answer that is not GraphQL's own (RULES-v2 §6: never text/plain, never a bare 500)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import orjson
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette_compress import CompressMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.messages import pick_locale, render
from tihuo.observability import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestRefused(Exception):
    """A request the server will not run, answered with `status` and `{"errors": [{message,
    extensions: {code}}]}`; `key` picks the message (core.messages), unless a protocol wants its
    own words (`literal`, e.g. Apollo's PersistedQueryNotFound, which clients match)."""

    def __init__(
        self,
        status: int,
        code: str,
        key: str,
        *,
        literal: str | None = None,
        cache_control: str = "no-store",
        **params: object,
    ) -> None:
        super().__init__(key)
        self.status = status
        self.code = code
        self.key = key
        self.literal = literal
        self.cache_control = cache_control
        self.params = params


def error_body(code: str, message: str, **extensions: object) -> bytes:
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code, **extensions}}]})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


async def send_refusal(scope: Scope, send: Send, refused: RequestRefused) -> None:
    """Answer `refused` as JSON in the language the request asked for."""
    message = refused.literal or render(
        refused.key, pick_locale(_header(scope, b"accept-language")), **refused.params
    )
    body = error_body(refused.code, message)
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", refused.cache_control.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class EdgeMiddleware:
    """Outermost middleware of the app (one layer, on every request):

    - takes a well-formed incoming X-Request-ID or makes one, and echoes it on the response;
    - refuses a body over `max_body_bytes` with 413 before the app reads any of it;
    - adds `X-Content-Type-Options: nosniff` to every answer."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id") or ""
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        tagged = request_id.encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", tagged), NOSNIFF]
            await send(message)

        try:
            try:
                receive = await self._limited_body(scope, receive)
            except RequestRefused as refused:
                await send_refusal(scope, send_with_headers, refused)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)

    async def _limited_body(self, scope: Scope, receive: Receive) -> Receive:
        """The body, read whole and within the limit (the GraphQL view reads it whole anyway),
        handed on as one message; RequestRefused(413) as soon as it is too large."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise RequestRefused(413, "PAYLOAD_TOO_LARGE", "http.too_large", limit=self.max_body_bytes)
        if scope["method"] in ("GET", "HEAD") and declared is None:
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # the client went away: let the app see it as it would have
                return _replaying(message)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestRefused(413, "PAYLOAD_TOO_LARGE", "http.too_large", limit=self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def _replaying(message: Message) -> Receive:
    async def again() -> Message:
        return message

    return again


def proxy_middleware(allowed: Sequence[str]) -> list[Middleware]:
    """Forwarded headers (X-Forwarded-For, X-Forwarded-Proto) count only from these proxies'
    addresses or networks (uvicorn's own implementation); with none, never (RULES-v2 §7). The
    server in front must not apply them itself (`tihuo serve` does not; uvicorn needs
    --no-proxy-headers, or it trusts loopback)."""
    if not allowed:
        return []
    return [Middleware(ProxyHeadersMiddleware, trusted_hosts=list(allowed))]


# what a page on an allowed origin may send besides the CORS-safelisted headers (RULES-v2 §6)
CORS_HEADERS = ("Authorization", "Content-Type", "Accept-Language", "X-Request-ID")
# how long a browser may reuse an accepted preflight (Chromium keeps it at most 2 hours)
CORS_MAX_AGE_SECONDS = 600


class Cors(CORSMiddleware):
    """Starlette's CORS middleware, answering preflights as the rest of the edge answers: an accepted
    one is 204 with no body, a refused one (an origin, method or header not allowed) 403 as JSON
    with the code CORS_NOT_ALLOWED instead of Starlette's 400 text/plain. Either way the browser
    decides by the Access-Control-Allow-* headers, which a refused origin never gets."""

    def preflight_response(self, request_headers: Headers) -> Response:
        decided = super().preflight_response(request_headers)
        headers = {
            name: value
            for name, value in decided.headers.items()
            if name not in ("content-type", "content-length")
        }
        if decided.status_code == 200:
            return Response(status_code=204, headers=headers)
        message = render("http.cors", pick_locale(request_headers.get("accept-language")))
        headers["cache-control"] = "no-store"
        return Response(
            error_body("CORS_NOT_ALLOWED", message),
            status_code=403,
            media_type="application/json",
            headers=headers,
        )


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """Cross-origin access for the pages of these origins alone (TIHUO_CORS_ORIGINS): GET and POST,
    the headers of CORS_HEADERS, no credentials mode (tokens travel in a header, never in a cookie),
    and X-Request-ID readable by the page. With none, no CORS headers at all: browsers keep every
    other origin's page from reading an answer, and a preflight gets 405 like any OPTIONS."""
    if not origins:
        return []
    return [
        Middleware(
            Cors,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_HEADERS),
            allow_credentials=False,
            expose_headers=["X-Request-ID"],
            max_age=CORS_MAX_AGE_SECONDS,
        )
    ]


# answers up to this size go as they are: below it compression saves less than it costs
COMPRESS_ABOVE_BYTES = 1024


def compression_middleware() -> Middleware:
    """gzip, or Brotli where the client's Accept-Encoding names `br` (starlette-compress; zstd left
    off, RULES-v2 §6 asks for these two), for answers over COMPRESS_ABOVE_BYTES of the text types
    it knows (JSON, HTML, scripts, the downloads' text, which streams compressed); none when the
    client does not ask. Compressing private answers is safe from BREACH-style guessing here: a
    token travels in a header a foreign page cannot make the browser send, never in a cookie."""
    return Middleware(CompressMiddleware, minimum_size=COMPRESS_ABOVE_BYTES + 1, zstd=False)
