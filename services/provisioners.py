"""The provisioners that open a product for an order (RULES §5): what one is given and gives back, the
simulated one (addresses from the line's pool, recorded in the database) and the http one (a signed
POST to the provider), and the choice between them from the settings.

A request's order number is the provider's idempotency key: the same order asked twice is one product.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from core.settings import Settings
from models import ProductType, SimulatedServer
from services.runtime import Runtime
from services.signed_http import SignedPoster, redact

EXCERPT_MAX = 200
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
    # the same for every attempt at one order, never stored; kept out of repr so a logged request cannot leak it
    login_password: str = field(repr=False)
    member_id: int

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
            "loginPassword": self.login_password,
            "memberId": self.member_id,
        }


@dataclass(frozen=True)
class ProvisionResult:
    ip_address: str | None
    provider_ref: str | None


class Refused(Exception):
    """The provider definitely will not open this order: the order FAILS at once."""


class TransientFailure(Exception):
    """Timeout, connection error, 5xx: worth another attempt after a back-off."""


class Provisioner(Protocol):
    async def provision(self, request: ProvisionRequest) -> ProvisionResult: ...

    async def aclose(self) -> None:
        """Let go of what the provisioner holds (connections); the worker calls it as it stops."""
        ...


# ---------------------------------------------------------------- the provisioners


class SimulatedProvisioner:
    """Opens nothing: hands out the next free address of the line's `ip_pool`, after the configured
    delay, or fails as configured. Its record lives in the database, so every worker shares it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def provision(self, request: ProvisionRequest) -> ProvisionResult:
        settings = self.rt.settings
        if settings.simulated_delay_ms:
            await asyncio.sleep(settings.simulated_delay_ms / 1000)
        if settings.simulated_failure == "refuse":
            raise Refused("simulated refusal")
        if settings.simulated_failure == "transient":
            raise TransientFailure("simulated transient failure")
        for _ in range(SIMULATED_ADDRESS_TRIES):
            try:
                address = await self._take_address(request)
            except IntegrityError:
                # another worker took this address (or opened this very order) meanwhile: look again
                continue
            return ProvisionResult(ip_address=address, provider_ref=f"sim-{request.order_no}")
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
    """POSTs the request as JSON to TIHUO_PROVISIONER_URL, signed with HMAC-SHA256 of the body and
    carrying the order number as `Idempotency-Key`, over one kept client. 2xx = opened, 4xx = refused,
    anything else or no answer in time = transient."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.provisioner_url and settings.provisioner_secret):
            raise ValueError("the http provisioner needs TIHUO_PROVISIONER_URL and TIHUO_PROVISIONER_SECRET")
        self.timeout = settings.provision_timeout_seconds
        self.poster = SignedPoster(settings.provisioner_url, settings.provisioner_secret, self.timeout)

    async def provision(self, request: ProvisionRequest) -> ProvisionResult:
        try:
            response = await self.poster.post(request.as_json(), {"Idempotency-Key": request.order_no})
        except httpx.TimeoutException as exc:
            raise TransientFailure(f"no answer within {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise TransientFailure(f"connection error: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        reason = f"HTTP {status}: {_excerpt(response, request.login_password)}"
        if 200 <= status < 300:
            result = _read_result(response)
            if result is None:
                # the provider says done but we cannot read it: asking again (same key) is safe
                raise TransientFailure(f"unreadable answer: {reason}")
            return result
        if 400 <= status < 500:
            raise Refused(reason)
        raise TransientFailure(reason)

    async def aclose(self) -> None:
        await self.poster.aclose()


def _excerpt(response: httpx.Response, secret: str | None) -> str:
    # a provider may echo the request back; the password must not reach a log or the order row
    # (redacted before it is cut, so no part of the password survives at the cut)
    return redact(" ".join(response.text.split()), secret)[:EXCERPT_MAX]


def _read_result(response: httpx.Response) -> ProvisionResult | None:
    """`{"ipAddress": "198.51.100.2" | null, "ref": "…" | null}`, or None if it is not that."""
    try:
        answer = response.json()
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    ip_address, ref = answer.get("ipAddress"), answer.get("ref")
    if not (ip_address is None or isinstance(ip_address, str)) or not (
        ref is None or isinstance(ref, str | int)
    ):
        return None
    return ProvisionResult(ip_address=ip_address, provider_ref=None if ref is None else str(ref))


def provisioner_from_settings(rt: Runtime) -> Provisioner:
    if rt.settings.provisioner == "http":
        return HttpProvisioner(rt.settings)
    return SimulatedProvisioner(rt)
