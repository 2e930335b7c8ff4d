"""The HTTP edge, before any route: request ids, the body-size limit, trusted proxies' forwarded
headers, headers every answer carries, and the JSON shape of every answer that is not GraphQL's own
(RULES-v2 §6: never text/plain, never a bare 500)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import orjson
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.messages import pick_locale, render
from tihuo.observability import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestRefused(Exception):
    """A request the server will not run, answered with `status` and `{"errors": [{message,
    extensions: {code}}]}`; `key` picks the message (core.messages)."""

    def __init__(self, status: int, code: str, key: str, **params: object) -> None:
        super().__init__(key)
        self.status = status
        self.code = code
        self.key = key
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
    message = render(refused.key, pick_locale(_header(scope, b"accept-language")), **refused.params)
    body = error_body(refused.code, message)
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
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
