"""The platform's signed callback (RULES-v2 §3, `POST /provisioning/callback`): verified like every
signed call (a signature over "{timestamp}.{body}" with TIHUO_PROVISIONER_SECRET, a timestamp within
5 minutes), then written down as the task's end for the next claim to apply, so the instance and
the SMS are made by the worker exactly as after a poll.

Replay-safe: a call outside the window is refused before anything is read; inside it, a repeat
finds the task no longer waiting and changes nothing. A root password in the body is sealed at once
and never stored in clear; the attempt row keeps the answer cut and without it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from models import AttemptOutcome, JobStatus, Order, OrderStatus, ProvisioningJob
from services.provisioning_attempts import cut, record_answer
from services.runtime import Runtime
from services.signed_http import verify

log = logging.getLogger("tihuo.provisioning")

STATUSES = ("active", "failed", "running")
TEXT_MAX = 200


class CallbackRefused(Exception):
    """Not signed by the platform, or outside the time window: 401, nothing changed."""


class CallbackInvalid(Exception):
    """Signed, but not a callback the bridge defines: 400, nothing changed."""


@dataclass(frozen=True)
class CallbackResult:
    """`applied`: the report changed the waiting task; False when it had ended already (a repeat)."""

    applied: bool


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 0 < len(value) <= TEXT_MAX:
        raise CallbackInvalid(f"{name} must be a string of 1 to {TEXT_MAX} characters")
    return value


def _parse(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        raise CallbackInvalid("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise CallbackInvalid("the body is not a JSON object")
    if parsed.get("status") not in STATUSES:
        raise CallbackInvalid(f"status must be one of {', '.join(STATUSES)}")
    return parsed


class UnknownTask(Exception):
    """No order of that number has that task: 404, nothing changed."""


async def receive_callback(
    rt: Runtime, body: bytes, timestamp: str | None, signature: str | None
) -> CallbackResult:
    """Check and record one callback; raises CallbackRefused, CallbackInvalid or UnknownTask."""
    secret = rt.settings.provisioner_secret
    if not secret or not verify(secret, timestamp, signature, body, rt.now().timestamp()):
        raise CallbackRefused()
    answer = _parse(body)
    task_id = _text(answer, "taskId", required=True)
    order_no = _text(answer, "orderNo", required=True)
    status = answer["status"]
    root = _text(answer, "rootPassword")
    now = rt.now()
    async with rt.db.write() as session:
        order = await session.scalar(
            select(Order).where(Order.order_no == order_no, Order.external_task_id == task_id)
        )
        if order is None:
            raise UnknownTask()
        # the job row first, as a claim takes it: a worker's step and the callback take turns
        job = await session.scalar(
            select(ProvisioningJob).where(ProvisioningJob.order_id == order.id).with_for_update()
        )
        waiting = (
            order.status is OrderStatus.PROVISIONING
            and job is not None
            and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
            and job.reported is None
        )
        detail = cut(f"callback: {body.decode(errors='replace')}", root)
        if not waiting or job is None:
            return CallbackResult(applied=False)
        if status == "running":
            await record_answer(session, order.id, now, AttemptOutcome.ACCEPTED, detail or "")
            return CallbackResult(applied=True)
        reported: dict[str, Any] = {"status": status}
        values: dict[str, Any] = {"run_after": now, "updated_at": now}
        if status == "active":
            reported |= {"ipAddress": _text(answer, "ipAddress"), "ref": _text(answer, "ref")}
            if root:
                sealed = rt.password_keys.seal(root, order.order_no)
                reported["rootPassword"] = True
                values |= {"password_cipher": sealed.cipher, "password_key_version": sealed.key_version}
        else:
            reported["reason"] = cut(_text(answer, "reason") or "the platform's task failed", root)
        await session.execute(
            update(ProvisioningJob)
            .where(ProvisioningJob.id == job.id)
            .values(reported=reported, **values)
            .execution_options(synchronize_session=False)
        )
        outcome = AttemptOutcome.DONE if status == "active" else AttemptOutcome.REFUSED
        await record_answer(session, order.id, now, outcome, detail or "")
    rt.jobs_ready.set()
    log.info(
        "order %s: the platform reported task %s %s",
        order_no,
        task_id,
        status,
        extra={"event": "provisioning.callback", "order_no": order_no},
    )
    return CallbackResult(applied=True)
