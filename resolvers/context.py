"""The per-request GraphQL context: runtime, caller, language and a fresh set of DataLoaders. A
WebSocket's context lasts the connection: its caller comes from the `connection_init` payload's
`Authorization`, checked as a request's header is (`sign_in`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from starlette.requests import HTTPConnection, Request

from core.messages import pick_locale
from resolvers.loaders import Loaders
from services.accounts import viewer_for_token
from services.runtime import Caller, Runtime


@dataclass
class Context:
    rt: Runtime
    caller: Caller
    locale: str
    request_id: str | None
    # the document as the HTTP view prepared it ahead of Strawberry (schema.documents), if it did
    prepared: Any = None
    # a trusted document's operation name (tihuo/persisted.py): the metrics label it instead of
    # its first root field, as the manifest bounds the names
    operation_label: str | None = None
    # the bearer token the caller signed in with (a WebSocket's subscriptions check it again)
    token: str | None = None
    # what a WebSocket's `connection_init` carried (Strawberry sets it)
    connection_params: dict[str, Any] | None = None
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.renew_loaders()

    def renew_loaders(self) -> None:
        """A fresh set of DataLoaders: a subscription's every message reads its rows anew."""
        self.loaders = Loaders(self.rt, self.caller)

    async def sign_in(self, authorization: object) -> None:
        """The caller that an `Authorization` value signs in (nobody for a missing or bad one)."""
        token = _bearer(authorization)
        viewer = None if token is None else await viewer_for_token(self.rt, token)
        self.token = token if viewer is not None else None
        self.caller = replace(self.caller, viewer=viewer)
        self.renew_loaders()


def _bearer(authorization: object) -> str | None:
    if not isinstance(authorization, str):
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def build_context(rt: Runtime, request: HTTPConnection) -> Context:
    """The context of a request (signed in by its Authorization header) or of a WebSocket (signed in
    later, by its connection_init payload)."""
    request_id = getattr(request.state, "request_id", None)
    locale = pick_locale(request.headers.get("accept-language"))
    token = _bearer(request.headers.get("authorization", "")) if isinstance(request, Request) else None
    caller = Caller(
        viewer=None if token is None else await viewer_for_token(rt, token),
        client_address=request.client.host if request.client else None,
        request_id=request_id,
        locale=locale,
    )
    return Context(rt=rt, caller=caller, locale=locale, request_id=request_id, token=token)
