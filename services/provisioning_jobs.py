"""Provisioning jobs (RULES §5, RULES-v2 §3): jobs claimed under a lease, in batches (`claim_jobs`),
and one step of each run to its recorded outcome (`run_job`): the create call, or, for a task the
platform accepted, one look at the task (or the end a callback reported). What each outcome writes
is `services/provisioning_outcomes.py`.

A job waiting on a platform task is only a row: QUEUED with the time of its next check, its order
PROVISIONING with `external_task_id`. No worker slot, lease or thread is held while the platform
works, so one worker keeps thousands of tasks in flight; a claim (SKIP LOCKED on PostgreSQL) gives
each check to one worker at a time. A job's order number is the platform's idempotency key, so a
retry or a takeover after a dead worker never opens a second product.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.sql import Sql
from models import (
    CardBatch,
    HostingPlan,
    JobStatus,
    Line,
    Order,
    OrderStatus,
    OsImage,
    ProductModel,
    ProductType,
    ProvisioningJob,
    Region,
    User,
)
from services import metrics, order_events
from services import provisioning_outcomes as outcomes
from services.login_passwords import Sealed, draw_password
from services.notifiers import Notifier, sms_text
from services.provisioners import (
    Accepted,
    Active,
    Provisioner,
    ProvisionRequest,
    Refused,
    Running,
    Task,
    TransientFailure,
)
from services.provisioning_attempts import lose_open_attempts, open_attempts
from services.provisioning_outcomes import ClaimedJob, log_extra
from services.runtime import Runtime
from services.signed_http import redact

log = logging.getLogger("tihuo.provisioning")


# ---------------------------------------------------------------- claiming a job


def _due(now: Any) -> Any:
    """Due at `now` (a time, or the bind parameter of the idle look)."""
    return or_(
        and_(ProvisioningJob.status == JobStatus.QUEUED, ProvisioningJob.run_after <= now),
        and_(ProvisioningJob.status == JobStatus.RUNNING, ProvisioningJob.lease_until < now),
    )


def _pick(now: Any, limit: int, waiting: bool | None) -> Select[Any]:
    """The oldest due jobs: creates (`waiting` False), checks of a platform's task (True), or both."""
    pick = (
        select(ProvisioningJob, Order.external_task_id)
        .join(Order, Order.id == ProvisioningJob.order_id)
        # a job whose order left the provisioning path (by hand, say) is not run
        .where(_due(now), or_(Order.status == OrderStatus.PENDING, Order.status == OrderStatus.PROVISIONING))
    )
    if waiting is not None:
        task = Order.external_task_id
        pick = pick.where(task.is_not(None) if waiting else task.is_(None))
    return pick.order_by(ProvisioningJob.run_after, ProvisioningJob.id).limit(limit)


# The idle poll's look (is any job of these kinds due?), per `waiting` as in `_pick`. An idle worker
# makes it every TIHUO_WORKER_POLL_SECONDS, so it goes through the drivers' own path (core.sql) and
# only reads: on SQLite a write transaction would take the database's one write lock.
_LOOKS = {
    waiting: Sql(
        _pick(bindparam("now", type_=ProvisioningJob.run_after.type), 1, waiting).with_only_columns(
            ProvisioningJob.id
        )
    )
    for waiting in (None, False, True)
}


async def claim_job(rt: Runtime, worker_id: str) -> ClaimedJob | None:
    """Take the oldest due job of either kind (`claim_jobs`), or None."""
    claimed = await _claim(rt, worker_id, {None: 1})
    return claimed[0] if claimed else None


async def claim_jobs(rt: Runtime, worker_id: str, *, creates: int, checks: int) -> list[ClaimedJob]:
    """Take up to `creates` due creates and up to `checks` due checks of platform tasks, oldest
    first, in one transaction: QUEUED and due (a create, or a task's next check), or RUNNING under
    an expired lease (its worker died: its open attempt ends LEASE_LOST). On PostgreSQL `FOR UPDATE
    SKIP LOCKED`, so concurrent workers take different jobs. The two are counted apart because a
    create may hold its call for TIHUO_PROVISION_TIMEOUT_SECONDS, a check is a short look."""
    return await _claim(rt, worker_id, {False: creates, True: checks})


async def _claim(rt: Runtime, worker_id: str, limits: dict[bool | None, int]) -> list[ClaimedJob]:
    """Up to `limits[waiting]` jobs of each kind (`_pick`), after the idle look found one due."""
    now = rt.now()
    wanted = [waiting for waiting, limit in limits.items() if limit > 0]
    if not wanted:
        return []
    # one look for either kind when both are wanted
    if not await rt.db.fetch(_LOOKS[wanted[0] if len(wanted) == 1 else None], {"now": now}):
        return []
    picks = [_pick(now, limits[waiting], waiting) for waiting in wanted]
    if not rt.db.is_sqlite:
        picks = [pick.with_for_update(of=ProvisioningJob, skip_locked=True) for pick in picks]
    now = rt.now()
    lease_until = now + timedelta(seconds=rt.settings.provision_lease_seconds)
    async with rt.db.write() as session:
        picked: list[tuple[ProvisioningJob, str | None]] = []
        for pick in picks:
            picked += [(job, task_id) for job, task_id in await session.execute(pick)]
        if not picked:
            return []
        taken = await _take(session, worker_id, now, lease_until, picked)
        picked = [(job, task_id) for job, task_id in picked if job.id in taken]
        if not picked:
            return []
        for job, _ in picked:
            if job.status is JobStatus.RUNNING:
                await lose_open_attempts(session, job.order_id, now, job.worker_id)
        order_ids = [job.order_id for job, _ in picked]
        started = await session.scalars(
            update(Order)
            .where(Order.id.in_(order_ids), Order.status == OrderStatus.PENDING)
            .values(status=OrderStatus.PROVISIONING)
            .returning(Order.id)
            .execution_options(synchronize_session=False)
        )
        await order_events.statuses_changed(session, sorted(started), OrderStatus.PROVISIONING)
        rows = {
            row[0].id: row
            for row in (await session.execute(_WHAT_A_STEP_NEEDS.where(Order.id.in_(order_ids))))
        }
        attempt_ids = await open_attempts(
            session, [job.order_id for job, _ in picked if job.reported is None], now
        )
        claimed = []
        for job, task_id in picked:
            if job.password_cipher is not None and job.password_key_version is not None:
                sealed = Sealed(job.password_cipher, job.password_key_version)
            else:
                # a job made before passwords were drawn with it (the migration gives them one): now
                sealed = rt.password_keys.seal(draw_password(), rows[job.order_id][0].order_no)
                await outcomes.store_password(session, job.id, sealed)
            claimed.append(
                _claimed(
                    job,
                    task_id,
                    rows[job.order_id],
                    worker_id,
                    lease_until,
                    sealed,
                    attempt_ids.get(job.order_id),
                )
            )
        return claimed


async def _take(
    session: AsyncSession,
    worker_id: str,
    now: datetime,
    lease_until: datetime,
    picked: list[tuple[ProvisioningJob, str | None]],
) -> set[int]:
    """The picked jobs, RUNNING under this worker's lease: a create counts an attempt, a check a
    poll. Conditional on being due still, though the row locks (or SQLite's one writer) hold them."""
    taken: set[int] = set()
    for waiting in (False, True):
        ids = [job.id for job, task_id in picked if (task_id is not None) is waiting]
        if not ids:
            continue
        counted = ProvisioningJob.polls if waiting else ProvisioningJob.attempts
        taken.update(
            await session.scalars(
                update(ProvisioningJob)
                .where(ProvisioningJob.id.in_(ids), _due(now))
                .values(
                    {
                        ProvisioningJob.status: JobStatus.RUNNING,
                        ProvisioningJob.worker_id: worker_id,
                        ProvisioningJob.lease_until: lease_until,
                        ProvisioningJob.updated_at: now,
                        counted: counted + 1,
                    }
                )
                .returning(ProvisioningJob.id)
                .execution_options(synchronize_session=False)
            )
        )
    return taken


_WHAT_A_STEP_NEEDS = (
    select(
        Order,
        Line,
        Region.name,
        OsImage.code,
        User.phone,
        User.realname_claims,
        CardBatch.months,
        ProductModel.code,
        HostingPlan.code,
    )
    .join(CardBatch, CardBatch.id == Order.batch_id)
    .join(Line, Line.id == CardBatch.line_id)
    .join(Region, Region.id == Line.region_id)
    .join(User, User.id == Order.member_id)
    .outerjoin(OsImage, OsImage.id == Order.os_image_id)
    .outerjoin(ProductModel, ProductModel.id == CardBatch.product_model_id)
    .outerjoin(HostingPlan, HostingPlan.id == CardBatch.hosting_plan_id)
)


def _claimed(
    job: ProvisioningJob,
    task_id: str | None,
    row: Any,
    worker_id: str,
    lease_until: datetime,
    sealed: Sealed,
    attempt_id: int | None,
) -> ClaimedJob:
    order, line, region_name, os_code, phone, realname, batch_months, model_code, plan_code = row
    waiting = task_id is not None
    config = dict(order.config)
    return ClaimedJob(
        job_id=job.id,
        worker_id=worker_id,
        attempts=job.attempts + (0 if waiting else 1),
        polls=job.polls + (1 if waiting else 0),
        lease_until=lease_until,
        attempt_id=attempt_id,
        order_id=order.id,
        order_no=order.order_no,
        member_id=order.member_id,
        member_phone=phone,
        realname=realname,
        product_type=ProductType(order.product_type),
        config=config,
        months=int(config.get("months") or batch_months),
        os_image_id=order.os_image_id,
        os_image_code=os_code,
        product_model_code=model_code,
        plan_code=plan_code,
        line_id=line.id,
        line_code=line.code,
        # the names the member bought under (frozen with the batch), else the catalog's
        line_name=config.get("lineName") or line.name,
        ip_pool=line.ip_pool,
        region_name=config.get("regionName") or region_name,
        sealed=sealed,
        task=None if task_id is None else Task(task_id, job.accepted_at or job.updated_at),
        deadline_at=job.deadline_at,
        reported=job.reported,
    )


# ---------------------------------------------------------------- running one step


async def _step(rt: Runtime, provisioner: Provisioner, job: ClaimedJob, request: ProvisionRequest) -> Any:
    """The platform's answer for this step: a create, a check of the task, or the callback's report."""
    if job.reported is not None:
        return outcomes.reported_answer(job.reported, rt, job)
    async with asyncio.timeout(rt.settings.provision_timeout_seconds):
        with metrics.PROVISIONING_SECONDS.time():
            if job.task is None:
                return await provisioner.provision(request)
            return await provisioner.check(request, job.task)


async def run_job(rt: Runtime, provisioner: Provisioner, notifier: Notifier, job: ClaimedJob) -> None:
    """One step of a claimed job, to a recorded outcome: ACTIVE (instance, then the SMS), waiting on
    the platform's task (next check after a back-off), FAILED (refused, task failed, deadline passed,
    retries spent) or back to the queue. Never raises for the step's own failures; if cancelled (the
    worker stopping) it hands the job back."""
    password = rt.password_keys.open(job.sealed, job.order_no)
    request = job.request(password)
    if job.task is not None and job.reported is None and job.deadline_at and rt.now() >= job.deadline_at:
        deadline = rt.settings.provision_deadline_seconds
        await outcomes.record_failed(
            rt, job, f"the platform's task {job.task.task_id} did not end within {deadline} s", "deadline"
        )
        return
    try:
        answer = await _step(rt, provisioner, job, request)
        if isinstance(answer, Accepted):
            await outcomes.record_accepted(rt, job, answer)
            return
        if isinstance(answer, Running):
            await outcomes.record_waiting(rt, job, answer.detail, transient=False)
            return
        assert isinstance(answer, Active)
        activated = await outcomes.record_active(rt, job, answer)
    except Refused as exc:
        await outcomes.record_failed(rt, job, redact(str(exc), password) or type(exc).__name__, "refused")
        return
    except TransientFailure as exc:
        await outcomes.record_transient(rt, job, redact(str(exc), password) or type(exc).__name__)
        return
    except TimeoutError:
        await outcomes.record_transient(
            rt, job, f"no answer within {rt.settings.provision_timeout_seconds:g} s"
        )
        return
    except asyncio.CancelledError:
        await asyncio.shield(outcomes.release(rt, job))
        raise
    except Exception as exc:
        log.exception(
            "order %s: unexpected error in attempt %d",
            job.order_no,
            job.attempts,
            extra=log_extra(job, "provisioning.error"),
        )
        await outcomes.record_transient(rt, job, redact(f"{type(exc).__name__}: {exc}", password))
        return
    if activated is None:
        return
    # the platform's own password when it gave one (RULES-v2 §3), else the one drawn for the order
    secret = answer.root_password or password
    text = sms_text(job.product_type, activated.ip_address, secret)
    try:
        await notifier.send_sms(job.member_phone, text, secret=secret)
    except Exception as exc:
        # the product is open; the member can still ask support for the login
        # no traceback: the text with the password may sit in a notifier's exception chain
        log.error(
            "order %s: SMS not sent: %s",
            job.order_no,
            redact(f"{type(exc).__name__}: {exc}", secret, password),
            extra=log_extra(job, "provisioning.notify_failed"),
        )
        return
    await outcomes.erase_password(rt, job)
