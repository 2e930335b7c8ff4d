"""The per-request GraphQL context: runtime, caller, language and a fresh set of DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

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
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.rt, self.caller)


async def build_context(rt: Runtime, request: Request) -> Context:
    request_id = getattr(request.state, "request_id", None)
    locale = pick_locale(request.headers.get("accept-language"))
    viewer = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        viewer = await viewer_for_token(rt, token.strip())
    caller = Caller(
        viewer=viewer,
        client_address=request.client.host if request.client else None,
        request_id=request_id,
        locale=locale,
    )
    return Context(rt=rt, caller=caller, locale=locale, request_id=request_id)
