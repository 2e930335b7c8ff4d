"""Provisioning on a platform that takes its time (RULES-v2 §3), against a real HTTP platform on
loopback that follows docs/provisioning-bridge.openapi.yaml (tests/fake_provider.FakePlatform):
accepted → polled → active, a task that fails, a deadline that passes, the back-off, the login
password (drawn, or the platform's own) sent by SMS and then kept nowhere, retry and cancel of a
waiting order (DELETE on the task before the card returns), and the simulated accepted mode.
The callback and what admins and members read: tests/api/test_provisioning_callback.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from models import AttemptOutcome, CardStatus, JobStatus, OrderStatus
from services import orders
from services.provisioning_jobs import claim_jobs
from services.runtime import Caller
from tests.fake_provider import FakePlatform, platform_settings, serve_platform, signed_by
from tests.provisioning_helpers import (
    attempts_of,
    card_status,
    database_holds,
    job_password,
    order_state,
    place_order,
    step,
    with_settings,
)

pytestmark = pytest.mark.usefixtures("catalog")

T0 = datetime(2027, 3, 1, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
async def platform(clock) -> AsyncIterator[FakePlatform]:  # type: ignore[no-untyped-def]
    clock.set(T0)
    async with serve_platform(finish_after=30, clock=lambda: clock().timestamp()) as running:
        yield running


@pytest.fixture
def prt(rt, platform):  # type: ignore[no-untyped-def]
    """The runtime with the http provisioner and notifier pointed at the platform."""
    return with_settings(rt, **platform_settings(platform))


async def test_accepted_then_polled_with_back_off_until_active_and_the_sms_carries_the_drawn_password(
    prt, platform, member, clock
):
    placed = await place_order(prt, member.id)
    password = await job_password(prt, placed.order_id)

    # when the worker makes the create call, the platform accepts it
    assert await step(prt)

    # then the order waits on the task, and the job is only a row with its next check: no lease
    state = await order_state(prt, placed.order_id)
    task_id = f"task-{placed.order_no}"
    assert (state.order.status, state.order.external_task_id) == (OrderStatus.PROVISIONING, task_id)
    assert (state.job.status, state.job.lease_until, state.job.worker_id) == (JobStatus.QUEUED, None, None)
    assert (state.job.run_after, state.job.deadline_at) == (
        T0 + timedelta(seconds=5),
        T0 + timedelta(hours=6),
    )
    assert not await step(prt)  # nothing is due before the check

    # and the task is looked at after 5 s, 7.5 s, 11.25 s, ... while it runs (30 s)
    checks = []
    while (await order_state(prt, placed.order_id)).order.status is OrderStatus.PROVISIONING:
        clock.set((await order_state(prt, placed.order_id)).job.run_after)
        checks.append((clock() - T0).total_seconds())
        assert await step(prt)
    assert checks == [5.0, 12.5, 23.75, 40.625]

    # then the product is open with the platform's address, and the member got the drawn password
    state = await order_state(prt, placed.order_id)
    assert (state.order.status, state.job.status) == (OrderStatus.ACTIVE, JobStatus.DONE)
    assert [i.ip_address for i in state.instances] == ["192.0.2.1"]
    assert platform.creates == {placed.order_no: 1}
    [create] = platform.calls("POST", "/provision")
    assert create.json["loginPassword"] == password
    assert [seen.json["text"] for seen in platform.calls("POST", "/sms")] == [
        f"【tihuo】您的云服务器已开通，IP：192.0.2.1，登录密码：{password}，请登录后及时修改密码。"
    ]
    # every call was signed with a fresh timestamp; every poll was a GET on the task
    assert platform.refused == 0 and all(signed_by(seen, platform.secret) for seen in platform.seen)
    assert [seen.path for seen in platform.calls("GET", "/provision/tasks/")] == [
        f"/provision/tasks/{task_id}"
    ] * 4
    # and the attempts tell the story; the password is erased once the SMS was taken
    assert [a.outcome for a in await attempts_of(prt, placed.order_id)] == [
        AttemptOutcome.ACCEPTED,
        AttemptOutcome.ACCEPTED,
        AttemptOutcome.ACCEPTED,
        AttemptOutcome.ACCEPTED,
        AttemptOutcome.DONE,
    ]
    assert (state.job.password_cipher, state.job.password_key_version) == (None, None)
    assert not await database_holds(prt, password)


async def test_the_platforms_root_password_reaches_the_sms_and_is_nowhere_in_the_database(
    prt, platform, member, clock
):
    platform.finish_after, platform.root_password = 0, "Pl@tform-Root-9x"
    placed = await place_order(prt, member.id)
    assert await step(prt)
    clock.advance(seconds=5)

    assert await step(prt)

    state = await order_state(prt, placed.order_id)
    assert state.order.status is OrderStatus.ACTIVE
    [sms] = platform.calls("POST", "/sms")
    assert "登录密码：Pl@tform-Root-9x，" in sms.json["text"]
    assert not await database_holds(prt, "Pl@tform-Root-9x")
    [_, done] = await attempts_of(prt, placed.order_id)
    assert done.outcome is AttemptOutcome.DONE and "******" in (done.detail or "")


async def test_a_task_that_fails_fails_the_order_with_the_platforms_reason(prt, platform, member, clock):
    platform.finish_after, platform.fail_reason = 0, "no capacity left on sh-bgp"
    placed = await place_order(prt, member.id)
    assert await step(prt)
    clock.advance(seconds=5)

    assert await step(prt)

    state = await order_state(prt, placed.order_id)
    assert (state.order.status, state.order.failure_reason) == (
        OrderStatus.FAILED,
        "no capacity left on sh-bgp",
    )
    assert (state.job.status, state.instances) == (JobStatus.FAILED, [])
    assert [a.outcome for a in await attempts_of(prt, placed.order_id)] == [
        AttemptOutcome.ACCEPTED,
        AttemptOutcome.REFUSED,
    ]


async def test_a_task_past_its_deadline_fails_the_order_and_polls_never_pass_the_deadline(
    prt, platform, member, clock
):
    platform.finish_after = 10_000
    deadline_rt = with_settings(prt, provision_deadline_seconds=20)
    placed = await place_order(deadline_rt, member.id)
    assert await step(deadline_rt)
    for _ in range(3):  # 5, 12.5, then 20 (not 23.75: the deadline)
        clock.set((await order_state(prt, placed.order_id)).job.run_after)
        assert await step(deadline_rt)
    assert clock() == T0 + timedelta(seconds=20)

    state = await order_state(prt, placed.order_id)
    reason = f"the platform's task task-{placed.order_no} did not end within 20 s"
    assert (state.order.status, state.order.failure_reason) == (OrderStatus.FAILED, reason)
    assert len(platform.calls("GET", "/provision/tasks/")) == 2


async def test_status_polls_answered_500_are_asked_again_and_never_make_a_second_create(
    prt, platform, member, clock
):
    platform.finish_after, platform.poll_error_rate = 0, 1.0  # every poll fails...
    placed = await place_order(prt, member.id)
    assert await step(prt)
    clock.advance(seconds=5)
    assert await step(prt)
    state = await order_state(prt, placed.order_id)
    assert (state.order.status, state.job.status) == (OrderStatus.PROVISIONING, JobStatus.QUEUED)
    assert state.job.last_error == 'HTTP 500: {"error": "the platform\'s API is having a moment"}'
    # asked again after 5 s, the back-off where it was (a "running" answer would have meant 7.5 s)
    assert (state.job.run_after, state.job.polls) == (clock() + timedelta(seconds=5), 0)

    platform.poll_error_rate = 0.0  # ...until the platform recovers
    clock.set(state.job.run_after)
    assert await step(prt)

    assert (await order_state(prt, placed.order_id)).order.status is OrderStatus.ACTIVE
    assert platform.creates == {placed.order_no: 1}
    assert [a.outcome for a in await attempts_of(prt, placed.order_id)] == [
        AttemptOutcome.ACCEPTED,
        AttemptOutcome.TRANSIENT,
        AttemptOutcome.DONE,
    ]


async def test_cancelling_a_waiting_order_deletes_the_task_first_and_returns_the_card(
    prt, platform, member, admin, clock
):
    placed = await place_order(prt, member.id)
    assert await step(prt)

    cancelled = await orders.cancel_order(prt, Caller(viewer=admin.viewer), str(placed.order_id))

    assert cancelled.status is OrderStatus.CANCELLED
    [delete] = platform.calls("DELETE", "/provision/tasks/")
    assert delete.path == f"/provision/tasks/task-{placed.order_no}" and signed_by(delete, platform.secret)
    assert platform.tasks[f"task-{placed.order_no}"].cancelled
    assert await card_status(prt, placed.card_id) is CardStatus.UNUSED
    state = await order_state(prt, placed.order_id)
    assert (state.job.status, state.job.password_cipher) == (JobStatus.FAILED, None)
    # the DELETE is the order's last attempt, after the create the platform accepted
    attempts = await attempts_of(prt, placed.order_id)
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, AttemptOutcome.ACCEPTED),
        (2, AttemptOutcome.CANCELLED),
    ]
    assert attempts[1].detail == f"DELETE of task task-{placed.order_no}: cancelled"
    assert attempts[1].finished_at is not None
    # and no worker looks at the task again
    clock.advance(seconds=600)
    assert not await step(prt)


async def test_a_cancel_the_platform_does_not_answer_changes_nothing(prt, platform, member, admin):
    placed = await place_order(prt, member.id)
    assert await step(prt)
    before = await order_state(prt, placed.order_id)
    unreachable = with_settings(prt, provisioner_url="http://127.0.0.1:9/provision")

    with pytest.raises(orders.InvalidState) as refused:
        await orders.cancel_order(unreachable, Caller(viewer=admin.viewer), str(placed.order_id))

    assert refused.value.key == "INVALID_STATE.platform_cancel_failed"
    after = await order_state(prt, placed.order_id)
    assert (after.order.status, after.job.status, after.job.run_after) == (
        before.order.status,
        before.job.status,
        before.job.run_after,
    )
    assert await card_status(prt, placed.card_id) is CardStatus.USED
    # what did happen is listed: a DELETE that got no answer
    attempts = await attempts_of(prt, placed.order_id)
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, AttemptOutcome.ACCEPTED),
        (2, AttemptOutcome.TRANSIENT),
    ]
    assert attempts[1].detail is not None
    assert attempts[1].detail.startswith(f"DELETE of task task-{placed.order_no}: ")


async def test_retrying_a_waiting_order_looks_at_its_task_now_with_a_fresh_deadline(
    prt, platform, member, admin, clock
):
    placed = await place_order(prt, member.id)
    assert await step(prt)
    clock.advance(seconds=2)

    retried = await orders.retry_provisioning(prt, Caller(viewer=admin.viewer), str(placed.order_id))

    assert retried.status is OrderStatus.PROVISIONING
    state = await order_state(prt, placed.order_id)
    assert (state.job.run_after, state.job.deadline_at) == (clock(), clock() + timedelta(hours=6))
    assert await step(prt)  # due at once: the task is polled, not created again
    assert len(platform.calls("GET", "/provision/tasks/")) == 1 and platform.creates == {placed.order_no: 1}


async def test_the_simulated_provisioner_accepts_and_finishes_after_its_delay(rt, member, clock):
    clock.set(T0)
    simulated = with_settings(rt, simulated_accept_seconds=10, simulated_delay_ms=0)
    placed = await place_order(simulated, member.id)

    assert await step(simulated)
    state = await order_state(simulated, placed.order_id)
    assert (state.order.status, state.order.external_task_id) == (
        OrderStatus.PROVISIONING,
        f"sim-{placed.order_no}",
    )
    clock.advance(seconds=5)
    assert await step(simulated)  # running at 5 s
    assert (await order_state(simulated, placed.order_id)).order.status is OrderStatus.PROVISIONING
    clock.advance(seconds=7.5)
    assert await step(simulated)  # done at 12.5 s

    state = await order_state(simulated, placed.order_id)
    assert state.order.status is OrderStatus.ACTIVE
    assert [i.ip_address for i in state.instances] == ["198.51.100.1"]


async def test_one_claim_takes_creates_and_checks_counted_apart_each_with_its_attempt_row(
    prt, platform, member, clock
):
    # given five orders whose creates the platform accepted, and three more not yet sent
    waiting = [await place_order(prt, member.id) for _ in range(5)]
    for _ in waiting:
        assert await step(prt)
    fresh = [await place_order(prt, member.id) for _ in range(3)]
    clock.set(T0 + timedelta(seconds=5))

    # when one worker claims at most 2 creates and 4 checks in one go
    claimed = await claim_jobs(prt, "w1", creates=2, checks=4)

    # then it holds the two oldest creates and the four oldest checks, under its lease
    assert sorted(job.order_no for job in claimed if job.task is None) == sorted(
        p.order_no for p in fresh[:2]
    )
    assert sorted(job.order_no for job in claimed if job.task is not None) == sorted(
        p.order_no for p in waiting[:4]
    )
    for job in claimed:
        state = await order_state(prt, job.order_id)
        assert (state.job.status, state.job.worker_id, state.order.status) == (
            JobStatus.RUNNING,
            "w1",
            OrderStatus.PROVISIONING,
        )
        # a create counts an attempt, a check a poll; each call has its open attempt row
        assert (state.job.attempts, state.job.polls) == ((1, 0) if job.task is None else (1, 1))
        attempts = await attempts_of(prt, job.order_id)
        assert attempts[-1].id == job.attempt_id and attempts[-1].outcome is None
        assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    # and another worker finds only what is left: one create and one check
    rest = await claim_jobs(prt, "w2", creates=5, checks=5)
    assert sorted(job.order_no for job in rest) == sorted([fresh[2].order_no, waiting[4].order_no])
    assert await claim_jobs(prt, "w3", creates=5, checks=5) == []


async def test_an_idle_look_finds_only_the_kinds_wanted_and_a_claim_of_nothing_due_opens_no_write(
    prt, platform, member, clock, monkeypatch
):
    # given one order whose create the platform accepted at T0: its first check is due at T0 + 5 s
    waiting = await place_order(prt, member.id)
    assert await step(prt)
    writes: list[None] = []
    opened = prt.db.write
    monkeypatch.setattr(prt.db, "write", lambda *a, **k: writes.append(None) or opened(*a, **k))

    # when the worker polls before then, or wants only creates once the check is due
    assert await claim_jobs(prt, "w1", creates=5, checks=5) == []
    clock.set(T0 + timedelta(seconds=5))
    assert await claim_jobs(prt, "w1", creates=5, checks=0) == []

    # then its look found nothing: no write transaction was opened (on SQLite it takes the one lock)
    assert writes == []
    assert (await order_state(prt, waiting.order_id)).job.status is JobStatus.QUEUED
    # and a poll that wants checks takes it, in one write
    claimed = await claim_jobs(prt, "w1", creates=0, checks=5)
    assert [job.order_no for job in claimed] == [waiting.order_no]
    assert len(writes) == 1


async def test_a_look_that_failed_does_not_push_the_later_looks_back(prt, platform, member, clock):
    placed = await place_order(prt, member.id)
    assert await step(prt)  # accepted at T0; the task runs 30 s
    platform.poll_error_rate = 1.0
    clock.set(T0 + timedelta(seconds=5))
    assert await step(prt)  # the first look fails: asked again 5 s later
    assert (await order_state(prt, placed.order_id)).job.run_after == T0 + timedelta(seconds=10)

    platform.poll_error_rate = 0.0
    clock.set(T0 + timedelta(seconds=10))
    assert await step(prt)  # "running"

    # the next look keeps to the schedule from the acceptance (12.5 s), not 7.5 s after this one
    state = await order_state(prt, placed.order_id)
    assert (state.job.run_after, state.job.polls) == (T0 + timedelta(seconds=12.5), 1)


async def test_a_task_looked_at_behind_its_schedule_is_looked_at_again_after_the_back_off(
    prt, platform, member, clock
):
    placed = await place_order(prt, member.id)
    assert await step(prt)
    # the worker comes 20 s late to the first look: the second's time (12.5 s) has passed
    clock.set(T0 + timedelta(seconds=25))
    assert await step(prt)

    state = await order_state(prt, placed.order_id)
    assert (state.job.run_after, state.job.polls) == (T0 + timedelta(seconds=25 + 7.5), 1)
