"""What each end of a provisioning step writes (services/provisioning_jobs.py runs the step): the
job, its order, the instance, the attempt row, in one transaction each, and only while the worker
still holds the job (a worker that lost its lease records nothing but the attempt's LEASE_LOST).
Outcomes recorded at the same moment share their transaction (`Database.write_shared`, group
commit: each write below may run again alone). Every change of the order's status goes through
services/order_events.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import and_, case, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import AttemptOutcome, Instance, JobStatus, Order, OrderStatus, ProductType, ProvisioningJob
from services import metrics, order_events
from services.login_passwords import Sealed
from services.provisioners import Accepted, Active, ProvisionRequest, Refused, Task
from services.provisioning_attempts import finish_attempt
from services.runtime import Runtime

log = logging.getLogger("tihuo.provisioning")

# orders.failure_reason and provisioning_jobs.last_error are VARCHAR(500)
REASON_MAX = 500
INSTANCE_PREFIXES = {
    ProductType.CLOUD_SERVER: "cs",
    ProductType.VIRTUAL_HOST: "vh",
    ProductType.BARE_METAL: "bm",
}
# a platform task is looked at after 5 s, then ever more rarely, at most every 5 minutes
POLL_FIRST_SECONDS = 5.0
POLL_FACTOR = 1.5
POLL_MAX_SECONDS = 300.0


def expiry(activated_at: datetime, months: int, zone: tzinfo) -> datetime:
    """When an instance activated at `activated_at` for `months` ends (RULES §3): calendar months at
    the same time of day, a day the target month lacks becoming its last (Jan 31 + 1 → Feb 28 or 29).
    Counted in the business time zone `zone`, where the member reads the dates: near midnight the
    UTC date is another day, and another month's end."""
    local = activated_at.astimezone(zone)
    return (local + relativedelta(months=months)).astimezone(UTC)


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds until `lease_until`, with everything the step needs."""

    job_id: int
    worker_id: str
    attempts: int
    polls: int
    lease_until: datetime
    # the attempt row this step's call fills in (None when it applies a callback's report)
    attempt_id: int | None
    order_id: int
    order_no: str
    member_id: int
    member_phone: str | None = field(repr=False)
    realname: dict[str, Any] | None = field(repr=False)
    product_type: ProductType
    config: dict[str, Any]
    months: int
    os_image_id: int | None
    os_image_code: str | None
    product_model_code: str | None
    plan_code: str | None
    line_id: int
    line_code: str
    line_name: str
    ip_pool: str
    region_name: str
    sealed: Sealed
    # the platform's task being waited for, and when waiting ends
    task: Task | None
    deadline_at: datetime | None
    reported: dict[str, Any] | None

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
            member_phone=self.member_phone,
            realname=self.realname,
            product_model_code=self.product_model_code,
            plan_code=self.plan_code,
        )


def poll_delay(polls: int) -> timedelta:
    """How long after its `polls`-th look (0: the acceptance) a task is looked at again."""
    return timedelta(seconds=min(POLL_FIRST_SECONDS * POLL_FACTOR**polls, POLL_MAX_SECONDS))


def on_schedule(accepted_at: datetime, polls: int) -> datetime:
    """When a task accepted at `accepted_at` is due for its look after the `polls`-th: the
    acceptance plus the back-off's intervals so far (5 s, 12.5 s, 23.75 s, ... after it)."""
    return accepted_at + sum((poll_delay(done) for done in range(polls + 1)), timedelta())


def log_extra(job: ClaimedJob, event: str) -> dict[str, Any]:
    return {"event": event, "order_no": job.order_no, "job_id": job.job_id, "worker": job.worker_id}


def _held(job: ClaimedJob) -> Any:
    """Only the worker that still holds the job may write its outcome."""
    return and_(
        ProvisioningJob.id == job.job_id,
        ProvisioningJob.worker_id == job.worker_id,
        ProvisioningJob.status == JobStatus.RUNNING,
    )


async def _change_order(session: AsyncSession, job: ClaimedJob, status: OrderStatus, **values: Any) -> None:
    """The order moves on, unless it left the provisioning path meanwhile (an admin cancelled it)."""
    changed = await session.execute(
        update(Order)
        .where(Order.id == job.order_id, Order.status.in_((OrderStatus.PENDING, OrderStatus.PROVISIONING)))
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount == 1:
        await order_events.status_changed(session, job.order_id, status)


async def _settle(
    session: AsyncSession,
    job: ClaimedJob,
    now: datetime,
    outcome: AttemptOutcome,
    detail: str | None,
    **values: Any,
) -> bool:
    """Write the job's new state (`values`) and the attempt's outcome; False (logged, the attempt
    LEASE_LOST) when the lease was lost meanwhile, so another worker holds the job."""
    held = await session.execute(
        update(ProvisioningJob)
        .where(_held(job))
        .values(lease_until=None, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if held.rowcount == 1:
        if job.attempt_id is not None:
            await finish_attempt(session, job.attempt_id, now, outcome, detail)
        return True
    if job.attempt_id is not None:
        await finish_attempt(
            session, job.attempt_id, now, AttemptOutcome.LEASE_LOST, f"lease lost; the answer was: {detail}"
        )
    log.warning(
        "order %s: lease lost before the outcome was recorded; left to the job's holder",
        job.order_no,
        extra=log_extra(job, "provisioning.lease_lost"),
    )
    return False


async def store_password(session: AsyncSession, job_id: int, sealed: Sealed) -> None:
    await session.execute(
        update(ProvisioningJob)
        .where(ProvisioningJob.id == job_id)
        .values(password_cipher=sealed.cipher, password_key_version=sealed.key_version)
        .execution_options(synchronize_session=False)
    )


async def erase_password(rt: Runtime, job: ClaimedJob) -> None:
    """The SMS gateway took the message: nothing keeps the password any more."""

    async def write(session: AsyncSession) -> None:
        await session.execute(
            update(ProvisioningJob)
            .where(ProvisioningJob.id == job.job_id)
            .values(password_cipher=None, password_key_version=None)
            .execution_options(synchronize_session=False)
        )

    await rt.db.write_shared(write)


def reported_answer(reported: dict[str, Any], rt: Runtime, job: ClaimedJob) -> Active:
    """The end a signed callback reported (services/provisioning_callback.py): Active, or Refused.
    A root password it carried was sealed into the job; it is opened here."""
    if reported.get("status") == "failed":
        raise Refused(str(reported.get("reason") or "the platform's task failed"))
    root = None
    if reported.get("rootPassword"):
        root = rt.password_keys.open(job.sealed, job.order_no)
    return Active(reported.get("ipAddress"), reported.get("ref"), root, "callback: active")


async def record_active(rt: Runtime, job: ClaimedJob, result: Active) -> Instance | None:
    now = rt.now()
    values: dict[str, Any] = {"status": JobStatus.DONE, "last_error": None, "reported": None}
    if result.root_password and not (job.reported or {}).get("rootPassword"):
        # the platform's password is the member's now: kept only sealed, until the SMS went
        sealed = rt.password_keys.seal(result.root_password, job.order_no)
        values |= {"password_cipher": sealed.cipher, "password_key_version": sealed.key_version}

    async def write(session: AsyncSession) -> Instance | None:
        if not await _settle(session, job, now, AttemptOutcome.DONE, result.detail, **values):
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
        await _change_order(session, job, OrderStatus.ACTIVE, activated_at=now, failure_reason=None)
        return instance

    instance = await rt.db.write_shared(write)
    if instance is None:
        return None
    log.info(
        "order %s: active (ip %s, attempt %d)",
        job.order_no,
        result.ip_address,
        job.attempts,
        extra=log_extra(job, "provisioning.active"),
    )
    metrics.provisioning_attempt("active")
    return instance


async def record_accepted(rt: Runtime, job: ClaimedJob, answer: Accepted) -> None:
    """The platform took the request: the order waits with the task's id, the job is a row with the
    time of its first check and the deadline, held by nobody."""
    now = rt.now()

    async def write(session: AsyncSession) -> bool:
        if not await _settle(
            session,
            job,
            now,
            AttemptOutcome.ACCEPTED,
            answer.detail,
            status=JobStatus.QUEUED,
            worker_id=None,
            accepted_at=now,
            polls=0,
            run_after=now + poll_delay(0),
            deadline_at=now + timedelta(seconds=rt.settings.provision_deadline_seconds),
            last_error=None,
        ):
            return False
        await session.execute(
            update(Order)
            .where(Order.id == job.order_id)
            .values(external_task_id=answer.task_id)
            .execution_options(synchronize_session=False)
        )
        return True

    if not await rt.db.write_shared(write):
        return
    metrics.provisioning_attempt("accepted")
    log.info(
        "order %s: accepted by the platform as task %s",
        job.order_no,
        answer.task_id,
        extra=log_extra(job, "provisioning.accepted"),
    )


async def record_waiting(rt: Runtime, job: ClaimedJob, detail: str, *, transient: bool) -> None:
    """The task still runs: look again after the back-off, never past the deadline; at once if a
    callback reported its end meanwhile. The looks keep to their schedule from the acceptance
    (`on_schedule`), so a late look does not push the later ones back. A look that got no answer
    (5xx, silence) says nothing about the task: it is asked again after the first interval, and the
    back-off stays where it was, so a flaky status API delays an order by seconds, not by the next
    doubled interval."""
    now = rt.now()
    if transient:
        next_check, polls = now + poll_delay(0), job.polls - 1
    else:
        polls = job.polls
        next_check = on_schedule(job.task.accepted_at, polls) if job.task is not None else now
        if next_check <= now:
            # behind the schedule (a retry of the order, or looks that failed many times): from now
            next_check = now + poll_delay(polls)
    if job.deadline_at is not None:
        next_check = min(next_check, job.deadline_at)

    async def write(session: AsyncSession) -> None:
        await _settle(
            session,
            job,
            now,
            AttemptOutcome.TRANSIENT if transient else AttemptOutcome.ACCEPTED,
            detail,
            status=JobStatus.QUEUED,
            worker_id=None,
            polls=polls,
            run_after=case((ProvisioningJob.reported.is_not(None), now), else_=next_check),
            last_error=detail[:REASON_MAX] if transient else None,
        )

    await rt.db.write_shared(write)


async def record_failed(rt: Runtime, job: ClaimedJob, reason: str, event: str) -> None:
    now = rt.now()
    reason = reason[:REASON_MAX]

    async def write(session: AsyncSession) -> bool:
        if not await _settle(
            session, job, now, AttemptOutcome.REFUSED, reason, status=JobStatus.FAILED, last_error=reason
        ):
            return False
        await _change_order(session, job, OrderStatus.FAILED, failure_reason=reason)
        return True

    if not await rt.db.write_shared(write):
        return
    log.warning("order %s: failed: %s", job.order_no, reason, extra=log_extra(job, f"provisioning.{event}"))
    metrics.provisioning_attempt("failed")


async def record_transient(rt: Runtime, job: ClaimedJob, error: str) -> None:
    """No answer worth the name: a task is looked at again later (its deadline bounds the tries); a
    create is tried again with a doubled back-off until the attempts are spent."""
    if job.task is not None and job.reported is None:
        await record_waiting(rt, job, error, transient=True)
        return
    settings = rt.settings
    if job.attempts >= settings.provision_max_attempts:
        await record_failed(rt, job, f"retries spent: {error}", "retries_spent")
        return
    now = rt.now()
    delay = timedelta(milliseconds=settings.provision_backoff_ms * 2 ** (job.attempts - 1))
    if not await _requeue(rt, job, run_after=now + delay, error=error[:REASON_MAX]):
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


async def _requeue(
    rt: Runtime,
    job: ClaimedJob,
    *,
    run_after: datetime,
    error: str | None,
    outcome: AttemptOutcome = AttemptOutcome.TRANSIENT,
) -> bool:
    values: dict[str, Any] = {"status": JobStatus.QUEUED, "run_after": run_after}
    if error is not None:
        values["last_error"] = error
    now = rt.now()

    async def write(session: AsyncSession) -> bool:
        if not await _settle(session, job, now, outcome, error or "handed back", **values):
            return False
        if job.task is None:
            # a create that did not happen: PENDING again. A task the platform runs stays PROVISIONING
            changed = await session.execute(
                update(Order)
                .where(Order.id == job.order_id, Order.status == OrderStatus.PROVISIONING)
                .values(status=OrderStatus.PENDING)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount == 1:
                await order_events.status_changed(session, job.order_id, OrderStatus.PENDING)
        return True

    return await rt.db.write_shared(write)


async def release(rt: Runtime, job: ClaimedJob) -> None:
    """The worker is stopping mid-step: give the job back at once rather than after the lease.
    A platform that already took the create answers the retry from its idempotency key."""
    try:
        released = await _requeue(rt, job, run_after=rt.now(), error=None, outcome=AttemptOutcome.LEASE_LOST)
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
