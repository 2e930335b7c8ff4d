"""A provider and SMS gateway for tests: a real HTTP server on loopback that answers from a script,
keeps what it was sent (and on which connection), and counts the connections it holds open; and the
http provisioner and notifier pointed at it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.settings import Settings
from services.notifiers import HttpNotifier
from services.provisioners import HttpProvisioner, ProvisionRequest
from services.runtime import Runtime
from tests.provisioning_helpers import with_settings

PROVIDER_SECRET = "provider-signing-secret"
SMS_SECRET = "sms-signing-secret"
HANG = "hang"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    # the client's end of the TCP connection the request came on
    client: tuple[str, int]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProvider:
    """Answers each POST with the next scripted (status, body[, headers]), or hangs until released."""

    script: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    server: uvicorn.Server | None = None

    async def answer(self, request: Request) -> Response:
        assert request.client is not None
        client = (request.client.host, request.client.port)
        self.seen.append(Seen(request.url.path, dict(request.headers), await request.body(), client))
        step = self.script.pop(0) if self.script else (204, "")
        if step == HANG:
            await self.release.wait()
            return Response(status_code=504)
        status, body, *more = step
        headers = more[0] if more else None
        if isinstance(body, dict):
            return Response(json.dumps(body), status_code=status, media_type="application/json")
        return Response(body, status_code=status, media_type="text/plain", headers=headers)

    def connections_on(self, path: str) -> set[tuple[str, int]]:
        return {seen.client for seen in self.seen if seen.path == path}

    def open_connections(self) -> int:
        """Connections the server holds open (kept alive between requests, or in one)."""
        assert self.server is not None
        return len(self.server.server_state.connections)

    async def all_closed(self) -> bool:
        return self.open_connections() == 0


@asynccontextmanager
async def serve_fake_provider() -> AsyncIterator[FakeProvider]:
    """A `FakeProvider` on a free loopback port, stopped on leaving."""
    fake = FakeProvider()
    app = Starlette(
        routes=[
            Route("/provision", fake.answer, methods=["POST"]),
            Route("/sms", fake.answer, methods=["POST"]),
        ]
    )
    # an idle connection is kept a minute (uvicorn's default is 5 s), so one the client leaves open
    # is still open when a test looks
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            log_config=None,
            timeout_keep_alive=60,
        )
    )
    fake.server = server
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(5):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an Event)
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        await serving


def http_rt(rt: Runtime, provider: FakeProvider, **changes: Any) -> Runtime:
    """`rt` with the http provisioner pointed at `provider`."""
    wanted: dict[str, Any] = {
        "provisioner": "http",
        "provisioner_url": f"{provider.url}/provision",
        "provisioner_secret": PROVIDER_SECRET,
        "provision_timeout_seconds": 2,
    }
    return with_settings(rt, **{**wanted, **changes})


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def http_provisioner(settings: Settings, provider: FakeProvider, **changes: Any) -> HttpProvisioner:
    return HttpProvisioner(
        settings.model_copy(
            update={
                "provisioner_url": f"{provider.url}/provision",
                "provisioner_secret": PROVIDER_SECRET,
                **changes,
            }
        )
    )


def http_notifier(settings: Settings, provider: FakeProvider) -> HttpNotifier:
    return HttpNotifier(
        settings.model_copy(
            update={"notifier": "http", "notifier_url": f"{provider.url}/sms", "notifier_secret": SMS_SECRET}
        )
    )


def request_for(order_no: str = "T0001") -> ProvisionRequest:
    return ProvisionRequest(
        order_no=order_no,
        product_type="CLOUD_SERVER",  # type: ignore[arg-type]
        region_name="华东-上海",
        line_code="sh-bgp",
        line_name="上海 BGP",
        ip_pool="198.51.100.0/24",
        config={"months": 1},
        os_image_code=None,
        login_password="Aa1!Aa1!Aa1!Aa1!",
        member_id=7,
    )
