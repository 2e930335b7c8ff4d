"""Provisioning jobs (RULES §5): a job claimed under a lease (`claim_job`), one attempt run to its
recorded outcome (`run_job`: active, failed, retried with back-off, or released), the instance it
opens and its expiry, and the order's login password.

A job's order number is the provisioner's idempotency key, so a retry or a takeover after a dead
worker never opens a second product; the outcome is written only by the worker still holding the job.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from dateutil.relativedelta import relativedelta
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

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
    User,
)
from services import metrics, order_events
from services.notifiers import Notifier, sms_text
from services.provisioners import Provisioner, ProvisionRequest, ProvisionResult, Refused, TransientFailure
from services.runtime import Runtime
from services.signed_http import redact

log = logging.getLogger("tihuo.provisioning")

PASSWORD_LENGTH = 16
# no quotes, backslash, space or look-alikes: the password is typed from an SMS into a login prompt
PASSWORD_SYMBOLS = "!@#$%^&*-_=+"
PASSWORD_ALPHABET = string.ascii_letters + string.digits + PASSWORD_SYMBOLS
# orders.failure_reason and provisioning_jobs.last_error are VARCHAR(500)
REASON_MAX = 500
INSTANCE_PREFIXES = {
    ProductType.CLOUD_SERVER: "cs",
    ProductType.VIRTUAL_HOST: "vh",
    ProductType.BARE_METAL: "bm",
}


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


def expiry(activated_at: datetime, months: int, zone: tzinfo) -> datetime:
    """When an instance activated at `activated_at` for `months` ends (RULES §3): calendar months at
    the same time of day, a day the target month lacks becoming its last (Jan 31 + 1 → Feb 28 or 29).
    Counted in the business time zone `zone`, where the member reads the dates: near midnight the
    UTC date is another day, and another month's end."""
    local = activated_at.astimezone(zone)
    return (local + relativedelta(months=months)).astimezone(UTC)


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
        await order_events.status_changed(session, job.order_id, OrderStatus.PROVISIONING)
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


def log_extra(job: ClaimedJob, event: str) -> dict[str, Any]:
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
        await _record_refused(rt, job, redact(str(exc), password) or type(exc).__name__)
        return
    except TransientFailure as exc:
        await _record_transient(rt, job, redact(str(exc), password) or type(exc).__name__)
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
            extra=log_extra(job, "provisioning.error"),
        )
        await _record_transient(rt, job, redact(f"{type(exc).__name__}: {exc}", password))
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
            redact(f"{type(exc).__name__}: {exc}", password),
            extra=log_extra(job, "provisioning.notify_failed"),
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
        extra=log_extra(job, "provisioning.lease_lost"),
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
            expires_at=expiry(now, job.months, rt.settings.zone),
        )
        session.add(instance)
        await session.execute(
            update(Order)
            .where(Order.id == job.order_id)
            .values(status=OrderStatus.ACTIVE, activated_at=now, failure_reason=None)
            .execution_options(synchronize_session=False)
        )
        await order_events.status_changed(session, job.order_id, OrderStatus.ACTIVE)
    log.info(
        "order %s: active (ip %s, attempt %d)",
        job.order_no,
        result.ip_address,
        job.attempts,
        extra=log_extra(job, "provisioning.active"),
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
        await order_events.status_changed(session, job.order_id, OrderStatus.FAILED)
    log.warning("order %s: failed: %s", job.order_no, reason, extra=log_extra(job, event))
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
            extra=log_extra(job, "provisioning.lease_lost"),
        )
        return
    metrics.provisioning_attempt("retried")
    log.warning(
        "order %s: attempt %d failed, next in %.3f s: %s",
        job.order_no,
        job.attempts,
        delay.total_seconds(),
        error,
        extra=log_extra(job, "provisioning.retry"),
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
        await order_events.status_changed(session, job.order_id, OrderStatus.PENDING)
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
            extra=log_extra(job, "provisioning.released"),
        )
