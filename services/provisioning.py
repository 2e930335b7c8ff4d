"""Provisioning (RULES §5): durable jobs claimed under a lease, the provisioners that open a product
(simulated, http), the notifier that sends the member the login, and the worker loop that runs them.

A job's order number is the provisioner's idempotency key, so a retry or a takeover after a dead
worker never opens a second product; the outcome is written only by the worker still holding the job.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
import os
import socket
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.messages import product_name
from core.settings import Settings
from models import (
    CardBatch,
    Instance,
    JobStatus,
    Line,
    Order,
    OrderStatus,
    OsImage,
    ProductType,
    ProvisioningJob,
    Region,
    SimulatedServer,
    User,
)
from services import metrics
from services.runtime import Runtime

log = logging.getLogger("tihuo.provisioning")
notify_log = logging.getLogger("tihuo.notify")

PASSWORD_LENGTH = 16
# no quotes, backslash, space or look-alikes: the password is typed from an SMS into a login prompt
PASSWORD_SYMBOLS = "!@#$%^&*-_=+"
PASSWORD_ALPHABET = string.ascii_letters + string.digits + PASSWORD_SYMBOLS
REDACTED = "******"
# orders.failure_reason and provisioning_jobs.last_error are VARCHAR(500)
REASON_MAX = 500
EXCERPT_MAX = 200
INSTANCE_PREFIXES = {
    ProductType.CLOUD_SERVER: "cs",
    ProductType.VIRTUAL_HOST: "vh",
    ProductType.BARE_METAL: "bm",
}
# how often the simulated provisioner tries the next address after losing a race for one
SIMULATED_ADDRESS_TRIES = 20


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


class Notifier(Protocol):
    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        """Send `text` to `phone`; `secret` is the login password inside `text`, never to be logged."""
        ...


class NotificationFailed(Exception):
    """The SMS gateway did not take the message (the product is open all the same)."""


def login_password(secret: bytes, order_no: str) -> str:
    """The order's initial login password: 16 characters, at least one lower-case and one upper-case
    letter, digit and symbol, drawn uniformly from a keyed PRF of the order number.

    Derived, not drawn at random per attempt: a retry with the same idempotency key gets the
    provider's first answer, so it must carry the same password, or the member would be sent one the
    server never got. Derived, not stored: nothing holds it at rest; it needs the server secret."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tihuo", info=b"instance-login-password").derive(
        secret
    )
    # bytes at or above this would make the first symbols likelier (rejection sampling)
    limit = 256 - 256 % len(PASSWORD_ALPHABET)
    for counter in itertools.count():
        stream = hmac.digest(key, f"{order_no}:{counter}".encode(), hashlib.sha256)
        password = "".join(PASSWORD_ALPHABET[b % len(PASSWORD_ALPHABET)] for b in stream if b < limit)[
            :PASSWORD_LENGTH
        ]
        if (
            len(password) == PASSWORD_LENGTH
            and any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in PASSWORD_SYMBOLS for c in password)
        ):
            return password
    raise AssertionError("unreachable")  # pragma: no cover


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, REDACTED) if secret else text


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _excerpt(response: httpx.Response, secret: str | None) -> str:
    # a provider may echo the request back; the password must not reach a log or the order row
    # (redacted before it is cut, so no part of the password survives at the cut)
    return _redact(" ".join(response.text.split()), secret)[:EXCERPT_MAX]


async def _post_signed(
    url: str, secret: str, payload: dict[str, Any], headers: dict[str, str], wait_seconds: float
) -> httpx.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    all_headers = {"Content-Type": "application/json", "X-Tihuo-Signature": _sign(secret, body), **headers}
    async with httpx.AsyncClient(timeout=wait_seconds, follow_redirects=False) as client:
        return await client.post(url, content=body, headers=all_headers)


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


ADDRESS_WINDOW = 64


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
    carrying the order number as `Idempotency-Key`. 2xx = opened, 4xx = refused, anything else or
    no answer in time = transient."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.provisioner_url and settings.provisioner_secret):
            raise ValueError("the http provisioner needs TIHUO_PROVISIONER_URL and TIHUO_PROVISIONER_SECRET")
        self.url = settings.provisioner_url
        self.secret = settings.provisioner_secret
        self.timeout = settings.provision_timeout_seconds

    async def provision(self, request: ProvisionRequest) -> ProvisionResult:
        try:
            response = await _post_signed(
                self.url,
                self.secret,
                request.as_json(),
                {"Idempotency-Key": request.order_no},
                self.timeout,
            )
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


# ---------------------------------------------------------------- the notifiers


def mask_phone(phone: str | None) -> str:
    """138****0001: enough to tell numbers apart in a log, not enough to call one."""
    if not phone:
        return "(no phone)"
    if len(phone) < 7:
        return "****"
    return f"{phone[:3]}****{phone[-4:]}"


def sms_text(product_type: ProductType, ip_address: str | None, password: str) -> str:
    parts = [f"【tihuo】您的{product_name(ProductType(product_type))}已开通"]
    if ip_address:
        parts.append(f"IP：{ip_address}")
    parts.append(f"登录密码：{password}")
    return "，".join(parts) + "，请登录后及时修改密码。"


class LogNotifier:
    """A development stand-in: logs the SMS with the phone masked and the password blanked out."""

    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        notify_log.info(
            "SMS to %s: %s", mask_phone(phone), _redact(text, secret), extra={"event": "notify.sms"}
        )


class HttpNotifier:
    """POSTs {"phone", "text"} to TIHUO_NOTIFIER_URL, signed like the provisioner's requests."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.notifier_url and settings.notifier_secret):
            raise ValueError("the http notifier needs TIHUO_NOTIFIER_URL and TIHUO_NOTIFIER_SECRET")
        self.url = settings.notifier_url
        self.secret = settings.notifier_secret
        self.timeout = settings.provision_timeout_seconds

    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        if not phone:
            notify_log.warning("SMS not sent: the member has no phone", extra={"event": "notify.no_phone"})
            return
        try:
            response = await _post_signed(
                self.url, self.secret, {"phone": phone, "text": text}, {}, self.timeout
            )
        except httpx.HTTPError as exc:
            raise NotificationFailed(f"SMS gateway unreachable: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            # no body excerpt: a gateway may echo the text, and the text holds the password
            raise NotificationFailed(f"SMS gateway answered HTTP {response.status_code}")


def provisioner_from_settings(rt: Runtime) -> Provisioner:
    if rt.settings.provisioner == "http":
        return HttpProvisioner(rt.settings)
    return SimulatedProvisioner(rt)


def notifier_from_settings(rt: Runtime) -> Notifier:
    if rt.settings.notifier == "http":
        return HttpNotifier(rt.settings)
    return LogNotifier()


# ---------------------------------------------------------------- time


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` plus calendar months at the same time of day; a day the target month lacks becomes
    its last day (Jan 31 + 1 → Feb 28 or 29). Works in `moment`'s own time zone."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def expiry(rt: Runtime, activated_at: datetime, months: int) -> datetime:
    """Calendar months counted in the business time zone, where the member reads the dates: near
    midnight the UTC date is another day, and another month's end."""
    local = activated_at.astimezone(rt.settings.zone)
    return add_months(local, months).astimezone(UTC)


# ---------------------------------------------------------------- claiming a job


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds until `lease_until`, with everything the attempt needs."""

    job_id: int
    worker_id: str
    attempts: int
    lease_until: datetime
    order_id: int
    order_no: str
    member_id: int
    member_phone: str | None
    product_type: ProductType
    config: dict[str, Any]
    months: int
    os_image_id: int | None
    os_image_code: str | None
    line_id: int
    line_code: str
    line_name: str
    ip_pool: str
    region_name: str

    def request(self, login_password: str) -> ProvisionRequest:
        return ProvisionRequest(
            order_no=self.order_no,
            product_type=self.product_type,
            region_name=self.region_name,
            line_code=self.line_code,
            line_name=self.line_name,
            ip_pool=self.ip_pool,
            config=self.config,
            os_image_code=self.os_image_code,
            login_password=login_password,
            member_id=self.member_id,
        )


async def claim_job(rt: Runtime, worker_id: str) -> ClaimedJob | None:
    """Take the oldest due job: QUEUED and due, or RUNNING under an expired lease (its worker died).
    One transaction; on PostgreSQL `FOR UPDATE SKIP LOCKED`, so concurrent workers take different jobs."""
    now = rt.now()
    due = or_(
        and_(ProvisioningJob.status == JobStatus.QUEUED, ProvisioningJob.run_after <= now),
        and_(ProvisioningJob.status == JobStatus.RUNNING, ProvisioningJob.lease_until < now),
    )
    pick = (
        select(ProvisioningJob)
        .join(Order, Order.id == ProvisioningJob.order_id)
        # a job whose order left the provisioning path (by hand, say) is not run
        .where(due, Order.status.in_((OrderStatus.PENDING, OrderStatus.PROVISIONING)))
        .order_by(ProvisioningJob.run_after, ProvisioningJob.id)
        .limit(1)
    )
    # an idle poll only reads: on SQLite a write transaction would take the database's one write lock
    async with rt.db.read() as session:
        if await session.scalar(pick.with_only_columns(ProvisioningJob.id)) is None:
            return None
    if not rt.db.is_sqlite:
        pick = pick.with_for_update(of=ProvisioningJob, skip_locked=True)
    lease_until = now + timedelta(seconds=rt.settings.provision_lease_seconds)
    async with rt.db.write() as session:
        job = await session.scalar(pick)
        if job is None:
            return None
        # conditional on what was read, though the row lock (or SQLite's one writer) already holds it
        taken = await session.execute(
            update(ProvisioningJob)
            .where(
                ProvisioningJob.id == job.id,
                ProvisioningJob.status == job.status,
                ProvisioningJob.attempts == job.attempts,
            )
            .values(
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                lease_until=lease_until,
                attempts=ProvisioningJob.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            return None
        await session.execute(
            update(Order)
            .where(Order.id == job.order_id)
            .values(status=OrderStatus.PROVISIONING)
            .execution_options(synchronize_session=False)
        )
        row = (
            await session.execute(
                select(Order, Line, Region.name, OsImage.code, User.phone, CardBatch.months)
                .join(CardBatch, CardBatch.id == Order.batch_id)
                .join(Line, Line.id == CardBatch.line_id)
                .join(Region, Region.id == Line.region_id)
                .join(User, User.id == Order.member_id)
                .outerjoin(OsImage, OsImage.id == Order.os_image_id)
                .where(Order.id == job.order_id)
            )
        ).one()
        order, line, region_name, os_code, phone, batch_months = row
        config = dict(order.config)
        return ClaimedJob(
            job_id=job.id,
            worker_id=worker_id,
            attempts=job.attempts + 1,
            lease_until=lease_until,
            order_id=order.id,
            order_no=order.order_no,
            member_id=order.member_id,
            member_phone=phone,
            product_type=ProductType(order.product_type),
            config=config,
            months=int(config.get("months") or batch_months),
            os_image_id=order.os_image_id,
            os_image_code=os_code,
            line_id=line.id,
            line_code=line.code,
            # the names the member bought under (frozen with the batch), else the catalog's
            line_name=config.get("lineName") or line.name,
            ip_pool=line.ip_pool,
            region_name=config.get("regionName") or region_name,
        )


# ---------------------------------------------------------------- running one attempt


def _held(job: ClaimedJob) -> Any:
    """Only the worker that still holds the job may write its outcome."""
    return and_(
        ProvisioningJob.id == job.job_id,
        ProvisioningJob.worker_id == job.worker_id,
        ProvisioningJob.status == JobStatus.RUNNING,
    )


def _log_extra(job: ClaimedJob, event: str) -> dict[str, Any]:
    return {"event": event, "order_no": job.order_no, "job_id": job.job_id, "worker": job.worker_id}


async def run_job(rt: Runtime, provisioner: Provisioner, notifier: Notifier, job: ClaimedJob) -> None:
    """One attempt at a claimed job, to a recorded outcome: ACTIVE (instance, then the SMS), FAILED
    (refused, or retries spent) or back to the queue with a doubled back-off. Never raises for the
    attempt's own failures; if cancelled (the worker stopping) it hands the job back."""
    password = login_password(rt.settings.secret, job.order_no)
    request = job.request(password)
    try:
        async with asyncio.timeout(rt.settings.provision_timeout_seconds):
            with metrics.PROVISIONING_SECONDS.time():
                result = await provisioner.provision(request)
        activated = await _record_active(rt, job, result)
    except Refused as exc:
        await _record_refused(rt, job, _redact(str(exc), password) or type(exc).__name__)
        return
    except TransientFailure as exc:
        await _record_transient(rt, job, _redact(str(exc), password) or type(exc).__name__)
        return
    except TimeoutError:
        await _record_transient(rt, job, f"no answer within {rt.settings.provision_timeout_seconds:g} s")
        return
    except asyncio.CancelledError:
        await asyncio.shield(_release(rt, job))
        raise
    except Exception as exc:
        log.exception(
            "order %s: unexpected error in attempt %d",
            job.order_no,
            job.attempts,
            extra=_log_extra(job, "provisioning.error"),
        )
        await _record_transient(rt, job, _redact(f"{type(exc).__name__}: {exc}", password))
        return
    if activated is None:
        return
    text = sms_text(job.product_type, activated.ip_address, password)
    try:
        await notifier.send_sms(job.member_phone, text, secret=password)
    except Exception as exc:
        # the product is open; the member can still ask support for the login
        # no traceback: the text with the password may sit in a notifier's exception chain
        log.error(
            "order %s: SMS not sent: %s",
            job.order_no,
            _redact(f"{type(exc).__name__}: {exc}", password),
            extra=_log_extra(job, "provisioning.notify_failed"),
        )


async def _settle(
    session: AsyncSession, job: ClaimedJob, now: datetime, status: JobStatus, error: str | None
) -> bool:
    """End the job we hold with `status`; False (logged) when its lease was lost meanwhile, so
    another worker holds it and this outcome must not be recorded."""
    held = await session.execute(
        update(ProvisioningJob)
        .where(_held(job))
        .values(status=status, lease_until=None, last_error=error, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if held.rowcount == 1:
        return True
    log.warning(
        "order %s: lease lost before the outcome was recorded; left to the job's holder",
        job.order_no,
        extra=_log_extra(job, "provisioning.lease_lost"),
    )
    return False


async def _record_active(rt: Runtime, job: ClaimedJob, result: ProvisionResult) -> Instance | None:
    now = rt.now()
    async with rt.db.write() as session:
        if not await _settle(session, job, now, JobStatus.DONE, None):
            return None
        instance = Instance(
            order_id=job.order_id,
            member_id=job.member_id,
            line_id=job.line_id,
            name=f"{INSTANCE_PREFIXES[job.product_type]}-{job.order_no}",
            product_type=job.product_type,
            region_name=job.region_name,
            line_name=job.line_name,
            ip_address=result.ip_address,
            status="RUNNING",
            config=job.config,
            os_image_id=job.os_image_id,
            provider_ref=result.provider_ref,
            created_at=now,
            expires_at=expiry(rt, now, job.months),
        )
        session.add(instance)
        await session.execute(
            update(Order)
            .where(Order.id == job.order_id)
            .values(status=OrderStatus.ACTIVE, activated_at=now, failure_reason=None)
            .execution_options(synchronize_session=False)
        )
    log.info(
        "order %s: active (ip %s, attempt %d)",
        job.order_no,
        result.ip_address,
        job.attempts,
        extra=_log_extra(job, "provisioning.active"),
    )
    metrics.provisioning_attempt("active")
    return instance


async def _record_failed(rt: Runtime, job: ClaimedJob, reason: str, event: str) -> None:
    now = rt.now()
    reason = reason[:REASON_MAX]
    async with rt.db.write() as session:
        if not await _settle(session, job, now, JobStatus.FAILED, reason):
            return
        await session.execute(
            update(Order)
            .where(Order.id == job.order_id)
            .values(status=OrderStatus.FAILED, failure_reason=reason)
            .execution_options(synchronize_session=False)
        )
    log.warning("order %s: failed: %s", job.order_no, reason, extra=_log_extra(job, event))
    metrics.provisioning_attempt("failed")


async def _record_refused(rt: Runtime, job: ClaimedJob, reason: str) -> None:
    await _record_failed(rt, job, reason, "provisioning.refused")


async def _record_transient(rt: Runtime, job: ClaimedJob, error: str) -> None:
    settings = rt.settings
    if job.attempts >= settings.provision_max_attempts:
        await _record_failed(rt, job, f"retries spent: {error}", "provisioning.retries_spent")
        return
    now = rt.now()
    delay = timedelta(milliseconds=settings.provision_backoff_ms * 2 ** (job.attempts - 1))
    if not await _requeue(rt, job, run_after=now + delay, error=error[:REASON_MAX]):
        log.warning(
            "order %s: lease lost; attempt %d's failure dropped: %s",
            job.order_no,
            job.attempts,
            error,
            extra=_log_extra(job, "provisioning.lease_lost"),
        )
        return
    metrics.provisioning_attempt("retried")
    log.warning(
        "order %s: attempt %d failed, next in %.3f s: %s",
        job.order_no,
        job.attempts,
        delay.total_seconds(),
        error,
        extra=_log_extra(job, "provisioning.retry"),
    )


async def _requeue(rt: Runtime, job: ClaimedJob, *, run_after: datetime, error: str | None) -> bool:
    values: dict[str, Any] = {
        "status": JobStatus.QUEUED,
        "run_after": run_after,
        "lease_until": None,
        "updated_at": rt.now(),
    }
    if error is not None:
        values["last_error"] = error
    async with rt.db.write() as session:
        held = await session.execute(
            update(ProvisioningJob)
            .where(_held(job))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if held.rowcount != 1:
            return False
        await session.execute(
            update(Order)
            .where(Order.id == job.order_id, Order.status == OrderStatus.PROVISIONING)
            .values(status=OrderStatus.PENDING)
            .execution_options(synchronize_session=False)
        )
    return True


async def _release(rt: Runtime, job: ClaimedJob) -> None:
    """The worker is stopping mid-attempt: give the job back at once rather than after the lease.
    A provider that already opened the product answers the retry from its idempotency key."""
    try:
        released = await _requeue(rt, job, run_after=rt.now(), error=None)
    except Exception:
        log.exception("order %s: could not hand the job back; it waits for its lease to expire", job.order_no)
        return
    if released:
        metrics.provisioning_attempt("released")
        log.info(
            "order %s: worker stopping, job handed back",
            job.order_no,
            extra=_log_extra(job, "provisioning.released"),
        )


# ---------------------------------------------------------------- the worker loop


def default_worker_id() -> str:
    """Names a worker in the jobs it holds: this machine and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    rt: Runtime,
    provisioner: Provisioner,
    notifier: Notifier,
    *,
    worker_id: str,
    stop: asyncio.Event,
    poll_seconds: float,
) -> None:
    """Claim and run due jobs, up to `worker_concurrency` at once; when none is due, sleep until
    `rt.jobs_ready` is set, a job finishes, or `poll_seconds` pass. Returns once `stop` is set,
    handing back the jobs still in flight."""
    limit = rt.settings.worker_concurrency
    running: set[asyncio.Task[None]] = set()
    log.info(
        "worker %s started (up to %d jobs at once)",
        worker_id,
        limit,
        extra={"event": "worker.start", "worker": worker_id},
    )
    next_housekeeping = 0.0
    try:
        while not stop.is_set():
            if (now := asyncio.get_running_loop().time()) >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                await _housekeeping(rt, worker_id)
            # cleared before looking, so a job queued while we look wakes the next wait at once
            rt.jobs_ready.clear()
            while len(running) < limit and not stop.is_set():
                try:
                    job = await claim_job(rt, worker_id)
                except Exception:
                    log.exception(
                        "worker %s: claiming a job failed",
                        worker_id,
                        extra={"event": "worker.claim_error", "worker": worker_id},
                    )
                    break
                if job is None:
                    break
                task = asyncio.create_task(
                    _run_logged(rt, provisioner, notifier, job), name=f"provision-{job.order_no}"
                )
                running.add(task)
                task.add_done_callback(running.discard)
            await _wait_for_any([rt.jobs_ready.wait(), stop.wait()], running, poll_seconds)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        log.info("worker %s stopped", worker_id, extra={"event": "worker.stop", "worker": worker_id})


HOUSEKEEPING_SECONDS = 600


async def _housekeeping(rt: Runtime, worker_id: str) -> None:
    """Periodic tidying that belongs to no request: expired idempotency keys."""
    from services.redemption import purge_idempotency_keys

    try:
        removed = await purge_idempotency_keys(rt)
    except Exception:
        log.exception(
            "worker %s: housekeeping failed", worker_id, extra={"event": "worker.housekeeping_error"}
        )
        return
    if removed:
        log.info(
            "worker %s: %d expired idempotency keys removed",
            worker_id,
            removed,
            extra={"event": "worker.housekeeping"},
        )


async def _run_logged(rt: Runtime, provisioner: Provisioner, notifier: Notifier, job: ClaimedJob) -> None:
    try:
        await run_job(rt, provisioner, notifier, job)
    except Exception:
        # recording the outcome failed (the database went away): the lease brings the job back
        log.exception(
            "order %s: outcome not recorded", job.order_no, extra=_log_extra(job, "provisioning.error")
        )


async def _wait_for_any(waits: list[Any], running: set[asyncio.Task[None]], seconds: float) -> None:
    waiters = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait([*waiters, *running], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
