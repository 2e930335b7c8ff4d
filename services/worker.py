"""The provisioning worker (RULES §5): the loop that claims due jobs and runs them a few at a time,
beside it the loop that sends webhooks (RULES-v2 §2, `services/webhook_delivery.py`), its periodic
housekeeping, and the name it signs its jobs with. How a job is claimed and run is
`services/provisioning_jobs.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from services.notifiers import Notifier
from services.provisioners import Provisioner
from services.provisioning_jobs import ClaimedJob, claim_jobs, log_extra, run_job
from services.redemption import purge_idempotency_keys
from services.runtime import Runtime
from services.webhook_delivery import run_deliveries
from services.webhooks import clear_previous_secrets

log = logging.getLogger("tihuo.provisioning")

HOUSEKEEPING_SECONDS = 600


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
    """Claim and run due jobs, up to `worker_concurrency` creates and `worker_check_concurrency`
    checks of platform tasks at once; when none is due, sleep until `rt.jobs_ready` is set, a job
    finishes, or `poll_seconds` pass. Returns once `stop` is set (or when cancelled), handing back
    the jobs still in flight. The provisioner and notifier are the worker's from the start: it
    closes them (their kept connections) as it stops."""
    settings = rt.settings
    limits = {"create": settings.worker_concurrency, "check": settings.worker_check_concurrency}
    running: dict[str, set[asyncio.Task[None]]] = {kind: set() for kind in limits}
    log.info(
        "worker %s started (up to %d creates and %d checks at once)",
        worker_id,
        limits["create"],
        limits["check"],
        extra={"event": "worker.start", "worker": worker_id},
    )
    next_housekeeping = 0.0
    webhooks = asyncio.create_task(
        run_deliveries(rt, worker_id=worker_id, stop=stop, poll_seconds=poll_seconds),
        name="webhook-deliveries",
    )
    try:
        while not stop.is_set():
            if (now := asyncio.get_running_loop().time()) >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_SECONDS
                await _housekeeping(rt, worker_id)
            # cleared before looking, so a job queued while we look wakes the next wait at once
            rt.jobs_ready.clear()
            # claimed in batches, once half a kind's slots are free: a claim is a write transaction
            free = {
                kind: limit - len(running[kind]) if len(running[kind]) <= limit // 2 else 0
                for kind, limit in limits.items()
            }
            try:
                jobs = await claim_jobs(rt, worker_id, creates=free["create"], checks=free["check"])
            except Exception:
                log.exception(
                    "worker %s: claiming jobs failed",
                    worker_id,
                    extra={"event": "worker.claim_error", "worker": worker_id},
                )
                jobs = []
            for job in jobs:
                kind = "create" if job.task is None else "check"
                task = asyncio.create_task(
                    _run_logged(rt, provisioner, notifier, job), name=f"provision-{job.order_no}"
                )
                running[kind].add(task)
                task.add_done_callback(running[kind].discard)
            in_flight = running["create"] | running["check"]
            await _wait_for_any([rt.jobs_ready.wait(), stop.wait()], in_flight, poll_seconds)
    finally:
        in_flight = running["create"] | running["check"]
        for task in in_flight:
            task.cancel()
        # the deliveries in flight are handed back, as the jobs are
        webhooks.cancel()
        await asyncio.gather(*in_flight, webhooks, return_exceptions=True)
        await _close(worker_id, provisioner, notifier)
        log.info("worker %s stopped", worker_id, extra={"event": "worker.stop", "worker": worker_id})


async def _close(worker_id: str, *holders: Provisioner | Notifier) -> None:
    """Close each, after the jobs that used them have ended; one that fails to close is logged and
    does not keep the others open."""
    for holder in holders:
        try:
            await holder.aclose()
        except Exception:
            log.exception(
                "worker %s: closing %s failed",
                worker_id,
                type(holder).__name__,
                extra={"event": "worker.close_error", "worker": worker_id},
            )


async def _housekeeping(rt: Runtime, worker_id: str) -> None:
    """Periodic tidying that belongs to no request: expired idempotency keys, webhook secrets whose
    overlap after a rotation has ended."""
    try:
        removed = await purge_idempotency_keys(rt)
        await clear_previous_secrets(rt)
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
            "order %s: outcome not recorded", job.order_no, extra=log_extra(job, "provisioning.error")
        )


async def _wait_for_any(waits: list[Any], running: set[asyncio.Task[None]], seconds: float) -> None:
    waiters = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait([*waiters, *running], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
