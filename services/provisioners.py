"""The provisioners that open a product for an order (RULES §5, RULES-v2 §3): what one is given and
gives back, the simulated one (addresses from the line's pool, recorded in the database; answering
"accepted" and finishing later when told to) and the http one (signed calls to the platform's
bridge, docs/provisioning-bridge.openapi.yaml), and the choice between them from the settings.

A create may end at once (`Active`) or be accepted (`Accepted`, a task id): the worker then asks
about the task later (`check`) or the platform calls back; `cancel` asks the platform to drop it.
A request's order number is the platform's idempotency key: the same order asked twice is one product.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from core.settings import Settings
from models import ProductType, SimulatedServer
from services.runtime import Runtime
from services.signed_http import SignedClient, redact

EXCERPT_MAX = 200
TASK_ID_MAX = 200  # orders.external_task_id is VARCHAR(200)
# how often the simulated provisioner tries the next address after losing a race for one
SIMULATED_ADDRESS_TRIES = 20
# how many addresses the simulated provisioner looks at in one statement
ADDRESS_WINDOW = 64


# ---------------------------------------------------------------- what a provisioner is given and gives


@dataclass(frozen=True)
class ProvisionRequest:
    """One order to open. `order_no` is the idempotency key: the same order asked twice is one product."""

    order_no: str
    product_type: ProductType
    region_name: str
    line_code: str
    line_name: str
    ip_pool: str
    config: dict[str, Any]
    os_image_code: str | None
    # the same for every attempt at one order, stored only encrypted; out of repr so a logged
    # request cannot leak it (nor the member's phone and real name)
    login_password: str = field(repr=False)
    member_id: int
    member_phone: str | None = field(default=None, repr=False)
    realname: dict[str, Any] | None = field(default=None, repr=False)
    product_model_code: str | None = None
    plan_code: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "orderNo": self.order_no,
            "productType": str(self.product_type),
            "regionName": self.region_name,
            "lineCode": self.line_code,
            "lineName": self.line_name,
            "ipPool": self.ip_pool,
            "config": self.config,
            "osImageCode": self.os_image_code,
            "productModelCode": self.product_model_code,
            "planCode": self.plan_code,
            "loginPassword": self.login_password,
            "memberId": str(self.member_id),
            "memberPhone": self.member_phone,
            "realname": self.realname,
        }


@dataclass(frozen=True)
class Active:
    """The product is open. `root_password`: the platform's own login password, if it gave one."""

    ip_address: str | None
    provider_ref: str | None
    root_password: str | None = field(default=None, repr=False)
    # the answer as an attempt row keeps it (cut, password-free): not part of what it means
    detail: str = field(default="", compare=False)


@dataclass(frozen=True)
class Accepted:
    """The platform took the request; `task_id` names its work until it ends."""

    task_id: str
    detail: str = field(default="", compare=False)


@dataclass(frozen=True)
class Running:
    """The task has not ended yet."""

    detail: str = field(default="", compare=False)


@dataclass(frozen=True)
class Task:
    """A platform task being waited for: its id and when the platform accepted it."""

    task_id: str
    accepted_at: datetime


class Refused(Exception):
    """The platform definitely will not open this order (4xx, or the task failed): it FAILS at once."""


class TransientFailure(Exception):
    """Timeout, connection error, 5xx: worth another attempt after a back-off."""


class Provisioner(Protocol):
    async def provision(self, request: ProvisionRequest) -> Active | Accepted: ...

    async def check(self, request: ProvisionRequest, task: Task) -> Active | Running:
        """Where an accepted task stands; Refused when it failed, TransientFailure when unknown."""
        ...

    async def cancel(self, task_id: str) -> None:
        """Ask the platform to drop a task that still runs; TransientFailure when it did not answer."""
        ...

    async def aclose(self) -> None:
        """Let go of what the provisioner holds (connections); the worker calls it as it stops."""
        ...


# ---------------------------------------------------------------- the provisioners


class SimulatedProvisioner:
    """Opens nothing: hands out the next free address of the line's `ip_pool`, after the configured
    delay, or fails as configured. Its record lives in the database, so every worker shares it.
    With TIHUO_SIMULATED_ACCEPT_SECONDS it answers "accepted" and its task ends that long after
    (known from the time it was accepted, so any worker can tell)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def provision(self, request: ProvisionRequest) -> Active | Accepted:
        settings = self.rt.settings
        if settings.simulated_delay_ms:
            await asyncio.sleep(settings.simulated_delay_ms / 1000)
        if settings.simulated_failure == "refuse":
            raise Refused("simulated refusal")
        if settings.simulated_failure == "transient":
            raise TransientFailure("simulated transient failure")
        if settings.simulated_accept_seconds:
            return Accepted(f"sim-{request.order_no}", detail="simulated: accepted")
        return await self._open(request)

    async def check(self, request: ProvisionRequest, task: Task) -> Active | Running:
        waited = (self.rt.now() - task.accepted_at).total_seconds()
        if waited < self.rt.settings.simulated_accept_seconds:
            return Running(detail=f"simulated: running ({waited:.0f} s)")
        return await self._open(request)

    async def cancel(self, task_id: str) -> None:
        """Its tasks hold nothing until they end."""

    async def _open(self, request: ProvisionRequest) -> Active:
        for _ in range(SIMULATED_ADDRESS_TRIES):
            try:
                address = await self._take_address(request)
            except IntegrityError:
                # another worker took this address (or opened this very order) meanwhile: look again
                continue
            return Active(
                ip_address=address, provider_ref=f"sim-{request.order_no}", detail="simulated: active"
            )
        raise TransientFailure(
            f"no address won on line {request.line_code} after {SIMULATED_ADDRESS_TRIES} tries"
        )

    async def _next_free(self, session: Any, request: ProvisionRequest) -> str | None:
        """Addresses go out in order and never come back, so the next free one sits at or after
        the count handed out so far: look there, a window at a time, instead of at every address
        (then once from the start, for a hole a lost race may have left)."""
        on_line = SimulatedServer.line_code == request.line_code
        handed_out = (
            await session.scalar(select(func.count()).select_from(SimulatedServer).where(on_line)) or 0
        )
        first, size = _host_range(ipaddress.ip_network(request.ip_pool, strict=False))
        for begin in dict.fromkeys((min(handed_out, size), 0)):
            for offset in range(begin, size, ADDRESS_WINDOW):
                candidates = [
                    str(first + index) for index in range(offset, min(offset + ADDRESS_WINDOW, size))
                ]
                taken = set(
                    await session.scalars(
                        select(SimulatedServer.ip_address).where(
                            on_line, SimulatedServer.ip_address.in_(candidates)
                        )
                    )
                )
                free = next((address for address in candidates if address not in taken), None)
                if free is not None:
                    return free
        return None

    async def _take_address(self, request: ProvisionRequest) -> str:
        async with self.rt.db.write() as session:
            known = await session.scalar(
                select(SimulatedServer.ip_address).where(SimulatedServer.order_no == request.order_no)
            )
            if known is not None:
                return known
            address = await self._next_free(session, request)
            if address is None:
                raise Refused(f"no free address on line {request.line_code} ({request.ip_pool})")
            await session.execute(
                insert(SimulatedServer).values(
                    order_no=request.order_no,
                    line_code=request.line_code,
                    ip_address=address,
                    created_at=self.rt.now(),
                )
            )
        return address

    async def aclose(self) -> None:
        """Holds nothing: its record is in the database."""


def _host_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[Any, int]:
    """The first usable host of a pool and how many there are (what `hosts()` would list)."""
    first = next(iter(network.hosts()), None)
    if first is None:
        return network.network_address, 0
    last = network.broadcast_address
    if network.version == 4 and network.prefixlen < 31:
        last = last - 1
    return first, int(last) - int(first) + 1


class HttpProvisioner:
    """The platform's bridge (docs/provisioning-bridge.openapi.yaml) over one kept, signed client:
    POST TIHUO_PROVISIONER_URL to create (the order number also as `Idempotency-Key`), GET and
    DELETE `{url}/tasks/{taskId}` for an accepted task. 2xx answers as the bridge says, 4xx = refused,
    anything else or no answer in time = transient."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.provisioner_url and settings.provisioner_secret):
            raise ValueError("the http provisioner needs TIHUO_PROVISIONER_URL and TIHUO_PROVISIONER_SECRET")
        self.timeout = settings.provision_timeout_seconds
        self.url = settings.provisioner_url
        self.http = SignedClient(settings.provisioner_url, settings.provisioner_secret, self.timeout)

    def task_url(self, task_id: str) -> str:
        return f"{self.url.rstrip('/')}/tasks/{quote(task_id, safe='')}"

    async def provision(self, request: ProvisionRequest) -> Active | Accepted:
        response = await self._call(self.http.post(request.as_json(), {"Idempotency-Key": request.order_no}))
        answer = _answer(response, request.login_password)
        if answer is None:
            _refused_or_transient(response, request.login_password)
        if isinstance(answer, Running):
            # "running" is an answer to a poll, not to a create: asking again (same key) is safe
            raise TransientFailure(f"unexpected answer to a create: {answer.detail}")
        return answer  # type: ignore[return-value]

    async def check(self, request: ProvisionRequest, task: Task) -> Active | Running:
        response = await self._call(self.http.call("GET", self.task_url(task.task_id)))
        answer = _answer(response, request.login_password)
        if answer is None:
            _refused_or_transient(response, request.login_password)
        if isinstance(answer, Accepted):
            raise TransientFailure(f"unexpected answer to a task poll: {answer.detail}")
        return answer  # type: ignore[return-value]

    async def cancel(self, task_id: str) -> None:
        response = await self._call(self.http.call("DELETE", self.task_url(task_id)))
        # 404: the platform has no such task (any more): nothing runs to be stopped
        if 200 <= response.status_code < 300 or response.status_code == 404:
            return
        _refused_or_transient(response, None)

    async def _call(self, call: Any) -> httpx.Response:
        try:
            return await call
        except httpx.TimeoutException as exc:
            raise TransientFailure(f"no answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise TransientFailure(f"connection error: {type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        await self.http.aclose()


def _excerpt(response: httpx.Response, *secrets: str | None) -> str:
    # a provider may echo the request back; the password must not reach a log or the order row
    # (redacted before it is cut, so no part of the password survives at the cut)
    return redact(" ".join(response.text.split()), *secrets)[:EXCERPT_MAX]


def _refused_or_transient(response: httpx.Response, password: str | None) -> None:
    """Raise what a non-answer means: Refused for a 4xx, TransientFailure for anything else."""
    status = response.status_code
    reason = f"HTTP {status}: {_excerpt(response, password)}"
    if 400 <= status < 500:
        raise Refused(reason)
    raise TransientFailure(f"unreadable answer: {reason}" if 200 <= status < 300 else reason)


def _answer(response: httpx.Response, password: str) -> Active | Accepted | Running | None:
    """A 2xx answer of the bridge; Refused for `failed`; None when it is not a 2xx or not readable.
    `{"status": "active", "ipAddress", "ref"?, "rootPassword"?}` (no status: active, as before),
    `{"status": "accepted", "taskId"}`, `{"status": "running"}`, `{"status": "failed", "reason"}`."""
    if not 200 <= response.status_code < 300:
        return None
    try:
        answer = response.json()
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    root = answer.get("rootPassword")
    if not (root is None or (isinstance(root, str) and root)):
        return None
    detail = f"HTTP {response.status_code}: {_excerpt(response, password, root)}"
    status = answer.get("status", "active")
    if status == "accepted":
        task_id = answer.get("taskId")
        if not isinstance(task_id, str | int) or not 0 < len(str(task_id)) <= TASK_ID_MAX:
            return None
        return Accepted(str(task_id), detail)
    if status == "running":
        return Running(detail)
    if status == "failed":
        reason = answer.get("reason")
        raise Refused(redact(str(reason), password, root)[:EXCERPT_MAX] if reason else detail)
    if status != "active":
        return None
    ip_address, ref = answer.get("ipAddress"), answer.get("ref")
    if not (ip_address is None or isinstance(ip_address, str)) or not (
        ref is None or isinstance(ref, str | int)
    ):
        return None
    return Active(ip_address, None if ref is None else str(ref), root, detail)


def provisioner_from_settings(rt: Runtime) -> Provisioner:
    if rt.settings.provisioner == "http":
        return HttpProvisioner(rt.settings)
    return SimulatedProvisioner(rt)
