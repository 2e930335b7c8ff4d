"""A provider and SMS gateway for tests: a real HTTP server on loopback that answers from a script,
keeps what it was sent (and on which connection), and counts the connections it holds open; a
platform that follows the bridge's protocol (docs/provisioning-bridge.openapi.yaml: signed calls,
idempotent creates, accepted tasks polled, cancelled or called back); and the http provisioner and
notifier pointed at them."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
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
from services.signed_http import signed_headers, verify
from tests.provisioning_helpers import with_settings

PROVIDER_SECRET = "provider-signing-secret"
SMS_SECRET = "sms-signing-secret"
HANG = "hang"


@dataclass
class Seen:
    method: str
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
        self.seen.append(
            Seen(request.method, request.url.path, dict(request.headers), await request.body(), client)
        )
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
            Route("/provision/tasks/{task_id}", fake.answer, methods=["GET", "DELETE"]),
            Route("/sms", fake.answer, methods=["POST"]),
        ]
    )
    async with _serving(app) as (server, url):
        fake.server, fake.url = server, url
        try:
            yield fake
        finally:
            fake.release.set()


@asynccontextmanager
async def _serving(app: Starlette) -> AsyncIterator[tuple[uvicorn.Server, str]]:
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
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(5):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an Event)
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
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


def signed_by(seen: Seen, secret: str) -> bool:
    """Whether a request the fake was sent carries tihuo's signature under `secret`, fresh."""
    return verify(
        secret, seen.headers.get("x-tihuo-timestamp"), seen.headers.get("x-tihuo-signature"), seen.body
    )


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


# ---------------------------------------------------------------- a platform that follows the bridge


@dataclass
class PlatformTask:
    task_id: str
    order_no: str
    created: float
    polls: int = 0
    cancelled: bool = False
    # how many looks at it are being answered right now (more than 1: two workers at once)
    in_flight: int = 0


@dataclass
class FakePlatform:
    """The bridge as docs/provisioning-bridge.openapi.yaml says, on loopback: refuses unsigned or
    stale calls with 401; a create answers "accepted" with one task per idempotency key (or
    "active" at once with `accept=False`); a task ends `finish_after` seconds after it was made,
    "active" with `root_password` or "failed" with `fail_reason`; a share `poll_error_rate` of the task
    polls answer 500; DELETE cancels. It keeps what it was asked: creates
    per idempotency key, polls per task, and the most polls of one task answered at once."""

    secret: str = PROVIDER_SECRET
    accept: bool = True
    finish_after: float = 0.0
    root_password: str | None = None
    fail_reason: str | None = None
    # the share of task polls answered 500 (drawn from a seeded generator: runs repeat)
    poll_error_rate: float = 0.0
    draws: random.Random = field(default_factory=lambda: random.Random(12))
    ip_prefix: str = "192.0.2."
    creates: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, PlatformTask] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    # each request with the status and JSON body it was answered with
    answered: list[tuple[Seen, int, Any]] = field(default_factory=list)
    refused: int = 0
    polls: int = 0
    most_at_once: int = 0
    url: str = ""
    clock: Any = None

    def now(self) -> float:
        return asyncio.get_running_loop().time() if self.clock is None else self.clock()

    async def _seen(self, request: Request) -> Seen | None:
        assert request.client is not None
        seen = Seen(
            request.method,
            request.url.path,
            dict(request.headers),
            await request.body(),
            (request.client.host, request.client.port),
        )
        self.seen.append(seen)
        if not signed_by(seen, self.secret):
            self.refused += 1
            return None
        return seen

    def _ended(self, task: PlatformTask, *, at_once: bool = False) -> dict[str, Any] | None:
        if not at_once and self.now() - task.created < self.finish_after:
            return None
        if self.fail_reason is not None:
            return {"status": "failed", "reason": self.fail_reason}
        answer: dict[str, Any] = {"status": "active", "ipAddress": self._address(task.order_no)}
        if self.root_password is not None:
            answer["rootPassword"] = self.root_password
        return answer

    def _address(self, order_no: str) -> str:
        """The n-th order's address: in `ip_prefix` for the first 250, then on in 198.18.0.0/15."""
        index = list(self.creates).index(order_no)
        return (
            f"{self.ip_prefix}{index + 1}" if index < 250 else str(ipaddress.ip_address("198.18.0.0") + index)
        )

    async def create(self, request: Request) -> Response:
        seen = await self._seen(request)
        if seen is None:
            return self._answer(seen, 401, {"error": "bad signature"})
        key = seen.headers["idempotency-key"]
        self.creates[key] = self.creates.get(key, 0) + 1
        task = self.tasks.get(f"task-{key}")
        if task is None:
            task = PlatformTask(f"task-{key}", seen.json["orderNo"], self.now())
            self.tasks[task.task_id] = task
        if not self.accept:
            answer = self._ended(task, at_once=True)
            if answer is None or answer["status"] == "failed":
                return self._answer(seen, 422, {"error": answer and answer["reason"]})
            return self._answer(seen, 201, answer)
        return self._answer(seen, 202, {"status": "accepted", "taskId": task.task_id})

    async def poll(self, request: Request) -> Response:
        seen = await self._seen(request)
        if seen is None:
            return self._answer(seen, 401, {"error": "bad signature"})
        task = self.tasks.get(request.path_params["task_id"])
        if task is None:
            return self._answer(seen, 404, {"error": "no such task"})
        task.polls += 1
        self.polls += 1
        task.in_flight += 1
        self.most_at_once = max(self.most_at_once, task.in_flight)
        try:
            # a moment inside the answer, so two workers looking at once would overlap here
            await asyncio.sleep(0.01)
            if self.poll_error_rate and self.draws.random() < self.poll_error_rate:
                return self._answer(seen, 500, {"error": "the platform's API is having a moment"})
            if task.cancelled:
                return self._answer(seen, 200, {"status": "failed", "reason": "cancelled"})
            return self._answer(seen, 200, self._ended(task) or {"status": "running"})
        finally:
            task.in_flight -= 1

    async def delete(self, request: Request) -> Response:
        seen = await self._seen(request)
        if seen is None:
            return self._answer(seen, 401, {"error": "bad signature"})
        task = self.tasks.get(request.path_params["task_id"])
        if task is None:
            return self._answer(seen, 404, {"error": "no such task"})
        task.cancelled = True
        self.answered.append((seen, 204, None))
        return Response(status_code=204)

    async def sms(self, request: Request) -> Response:
        seen = await self._seen(request)
        return (
            self._answer(seen, 401, {"error": "bad signature"})
            if seen is None
            else self._answer(seen, 200, {"accepted": True})
        )

    def _answer(self, seen: Seen | None, status: int, body: dict[str, Any]) -> Response:
        """Answer `seen` (None: an unsigned call, not kept) with JSON, and keep the answer."""
        if seen is not None:
            self.answered.append((seen, status, body))
        return Response(json.dumps(body), status_code=status, media_type="application/json")

    def calls(self, method: str, path_start: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.method == method and seen.path.startswith(path_start)]


@asynccontextmanager
async def serve_platform(**options: Any) -> AsyncIterator[FakePlatform]:
    """A `FakePlatform` on a free loopback port (its SMS gateway at /sms, signed with SMS_SECRET
    when `sms_secret` is the platform's own), stopped on leaving."""
    platform = FakePlatform(**options)
    app = Starlette(
        routes=[
            Route("/provision", platform.create, methods=["POST"]),
            Route("/provision/tasks/{task_id}", platform.poll, methods=["GET"]),
            Route("/provision/tasks/{task_id}", platform.delete, methods=["DELETE"]),
            Route("/sms", platform.sms, methods=["POST"]),
        ]
    )
    async with _serving(app) as (_, url):
        platform.url = url
        yield platform


def platform_settings(platform: FakePlatform) -> dict[str, Any]:
    """The settings that point the http provisioner and notifier at `platform`."""
    return {
        "provisioner": "http",
        "provisioner_url": f"{platform.url}/provision",
        "provisioner_secret": platform.secret,
        "notifier": "http",
        "notifier_url": f"{platform.url}/sms",
        "notifier_secret": platform.secret,
        "provision_timeout_seconds": 5,
    }


def callback_headers(body: bytes, secret: str = PROVIDER_SECRET, now: float | None = None) -> dict[str, str]:
    """What a platform sends with its callback: the body signed with the timestamp."""
    return {"Content-Type": "application/json", **signed_headers(secret, body, now)}
