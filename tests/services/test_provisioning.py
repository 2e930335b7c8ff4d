"""Provisioning: expiry in calendar months, jobs claimed under a lease and run to ACTIVE or FAILED,
retries with back-off, takeover after a dead worker, the worker loop, and the admin's retry and cancel."""

from __future__ import annotations

import asyncio
import logging
import string
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from models import (
    Card,
    CardBatch,
    CardStatus,
    JobStatus,
    Line,
    OrderStatus,
    ProductModel,
    ProductType,
    Redemption,
)
from services.errors import ErrorCode, Forbidden, InvalidState, NotFound
from services.login_passwords import draw_password
from services.notifiers import LogNotifier, mask_phone, sms_text
from services.orders import cancel_order, retry_provisioning
from services.provisioners import Active, ProvisionRequest, SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from services.provisioning_outcomes import expiry
from services.runtime import Caller
from services.worker import run_worker
from tests.provisioning_helpers import (
    RecordingNotifier,
    RecordingProvisioner,
    all_instances,
    audit_rows,
    order_state,
    place_order,
    wait_until,
    with_settings,
)

pytestmark = pytest.mark.usefixtures("catalog")

SHANGHAI_NOON_JAN_31 = datetime(2027, 1, 31, 4, 0, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def as_admin(user) -> Caller:  # type: ignore[no-untyped-def]
    return Caller(viewer=user.viewer)


async def provision_once(rt, worker_id="w1", provisioner=None, notifier=None) -> None:  # type: ignore[no-untyped-def]
    job = await claim_job(rt, worker_id)
    assert job is not None
    await run_job(rt, provisioner or SimulatedProvisioner(rt), notifier or RecordingNotifier(), job)


# ---------------------------------------------------------------- calendar months


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (datetime(2021, 6, 28, 19, 28, 22), 3, datetime(2021, 9, 28, 19, 28, 22)),
        (datetime(2027, 1, 31, 8, 0), 1, datetime(2027, 2, 28, 8, 0)),
        (datetime(2028, 1, 31, 8, 0), 1, datetime(2028, 2, 29, 8, 0)),
        (datetime(2027, 3, 31, 23, 59, 59), 1, datetime(2027, 4, 30, 23, 59, 59)),
        (datetime(2026, 12, 31, 0, 0), 2, datetime(2027, 2, 28, 0, 0)),
        (datetime(2026, 11, 15, 10, 0), 14, datetime(2028, 1, 15, 10, 0)),
        (datetime(2026, 5, 31, 10, 0), 36, datetime(2029, 5, 31, 10, 0)),
    ],
)
def test_expiry_counts_calendar_months_at_the_same_time_of_day(moment, months, expected):
    # the moments as the business time zone reads them; the expiry comes back in UTC
    ends = expiry(moment.replace(tzinfo=SHANGHAI), months, SHANGHAI)

    assert ends == expected.replace(tzinfo=SHANGHAI)
    assert ends.tzinfo is UTC


def test_expiry_counts_the_months_in_the_given_time_zone():
    # 23:00 UTC on Mar 30 is 07:00 on Mar 31 in Shanghai, so a month later is Apr 30 there (Apr 29 in
    # UTC); counted in UTC it is a day later
    moment = datetime(2027, 3, 30, 23, 0, 0, 5, tzinfo=UTC)

    assert expiry(moment, 1, SHANGHAI) == datetime(2027, 4, 29, 23, 0, 0, 5, tzinfo=UTC)
    assert expiry(moment, 1, UTC) == datetime(2027, 4, 30, 23, 0, 0, 5, tzinfo=UTC)
    assert expiry(datetime(2027, 1, 31, 19, 28, 22, 5, tzinfo=UTC), 1, UTC) == datetime(
        2027, 2, 28, 19, 28, 22, 5, tzinfo=UTC
    )


# ---------------------------------------------------------------- the login password


def test_the_login_password_is_strong_and_drawn_anew_for_each_order():
    passwords = {draw_password() for _ in range(300)}

    assert len(passwords) == 300
    for password in passwords:
        assert len(password) == 16
        assert any(c.islower() for c in password) and any(c.isupper() for c in password)
        assert any(c.isdigit() for c in password) and any(c in "!@#$%^&*-_=+" for c in password)
        assert set(password) <= set(string.ascii_letters + string.digits + "!@#$%^&*-_=+")


# ---------------------------------------------------------------- a job run to its end


async def test_a_queued_job_runs_to_active_and_the_sms_is_logged_without_the_password(
    rt, member, clock, caplog
):
    # given an order as a redemption leaves it, activated at noon on Jan 31 in Shanghai
    clock.set(SHANGHAI_NOON_JAN_31)
    placed = await place_order(rt, member.id, months=1)
    provisioner = RecordingProvisioner(SimulatedProvisioner(rt))
    caplog.set_level(logging.DEBUG)

    # when a worker claims and runs it
    job = await claim_job(rt, "w1")
    assert job is not None
    assert (job.job_id, job.attempts, job.order_no, job.member_phone) == (
        placed.job_id,
        1,
        placed.order_no,
        "13800000000",
    )
    await run_job(rt, provisioner, LogNotifier(), job)

    # then the order is ACTIVE with one instance expiring at noon on Feb 28, Shanghai time
    state = await order_state(rt, placed.order_id)
    assert state.order.status is OrderStatus.ACTIVE
    assert state.order.activated_at == SHANGHAI_NOON_JAN_31
    assert state.order.failure_reason is None
    assert (state.job.status, state.job.attempts, state.job.lease_until, state.job.last_error) == (
        JobStatus.DONE,
        1,
        None,
        None,
    )
    [instance] = state.instances
    assert {
        "name": instance.name,
        "product_type": instance.product_type,
        "region_name": instance.region_name,
        "line_name": instance.line_name,
        "line_id": instance.line_id,
        "member_id": instance.member_id,
        "ip_address": instance.ip_address,
        "status": instance.status,
        "provider_ref": instance.provider_ref,
        "created_at": instance.created_at,
        "expires_at": instance.expires_at,
        "config": instance.config,
        "os_image_id": instance.os_image_id,
    } == {
        "name": f"cs-{placed.order_no}",
        "product_type": ProductType.CLOUD_SERVER,
        "region_name": "华东-上海",
        "line_name": "上海 BGP",
        "line_id": placed.line_id,
        "member_id": member.id,
        "ip_address": "198.51.100.1",
        "status": "RUNNING",
        "provider_ref": f"sim-{placed.order_no}",
        "created_at": SHANGHAI_NOON_JAN_31,
        "expires_at": datetime(2027, 2, 28, 4, 0, 0, tzinfo=UTC),
        "config": state.order.config,
        "os_image_id": state.order.os_image_id,
    }
    # and the provisioner was asked once, with a 16-character password of every kind
    [request] = provisioner.requests
    password = request.login_password
    assert (request.order_no, request.line_code, request.ip_pool, request.os_image_code) == (
        placed.order_no,
        "sh-bgp",
        "198.51.100.0/24",
        "ubuntu-22.04",
    )
    assert len(password) == 16
    assert any(c.islower() for c in password) and any(c.isupper() for c in password)
    assert any(c.isdigit() for c in password) and any(not c.isalnum() for c in password)
    assert password not in repr(provisioner.requests)
    assert password not in repr(request)
    # and one SMS was logged, phone masked, password blanked; no log line holds the password
    sms = [r for r in caplog.records if r.name == "tihuo.notify"]
    assert [r.getMessage() for r in sms] == [
        "SMS to 138****0000: 【tihuo】您的云服务器已开通，IP：198.51.100.1，登录密码：******，请登录后及时修改密码。"
    ]
    assert all(password not in record.getMessage() for record in caplog.records)
    assert [r.event for r in caplog.records if r.name == "tihuo.provisioning"] == ["provisioning.active"]


async def test_the_member_is_sent_the_password_the_provider_set(rt, member):
    placed = await place_order(rt, member.id)
    provisioner = RecordingProvisioner(SimulatedProvisioner(rt))
    notifier = RecordingNotifier()

    await provision_once(rt, provisioner=provisioner, notifier=notifier)

    [request] = provisioner.requests
    [sms] = notifier.sent
    assert sms.phone == "13800000000"
    assert sms.secret == request.login_password
    assert sms.text == (
        f"【tihuo】您的云服务器已开通，IP：198.51.100.1，登录密码：{request.login_password}，请登录后及时修改密码。"
    )
    assert (await order_state(rt, placed.order_id)).order.status is OrderStatus.ACTIVE


async def test_expiry_counts_months_on_the_business_calendar(rt, member, clock):
    # 2027-03-30 23:00 UTC is 07:00 on Mar 31 in Shanghai: one month later is Apr 30 there
    clock.set(datetime(2027, 3, 30, 23, 0, tzinfo=UTC))
    placed = await place_order(rt, member.id, months=1)

    await provision_once(rt)

    [instance] = (await order_state(rt, placed.order_id)).instances
    assert instance.expires_at == datetime(2027, 4, 29, 23, 0, tzinfo=UTC)


async def test_each_product_type_is_named_and_texted_as_itself(rt, member):
    bare_metal = await place_order(rt, member.id, product_type=ProductType.BARE_METAL, months=3)
    virtual_host = await place_order(rt, member.id, product_type=ProductType.VIRTUAL_HOST)
    notifier = RecordingNotifier()

    await provision_once(rt, notifier=notifier)
    await provision_once(rt, notifier=notifier)

    [bm] = (await order_state(rt, bare_metal.order_id)).instances
    [vh] = (await order_state(rt, virtual_host.order_id)).instances
    assert (bm.name, bm.ip_address, bm.os_image_id is not None) == (
        f"bm-{bare_metal.order_no}",
        "198.51.100.1",
        True,
    )
    assert (vh.name, vh.ip_address, vh.os_image_id) == (f"vh-{virtual_host.order_no}", "198.51.100.2", None)
    assert [sms.text.split("，")[0] for sms in notifier.sent] == [
        "【tihuo】您的裸金属服务器已开通",
        "【tihuo】您的云虚拟主机已开通",
    ]


def test_the_sms_has_no_address_line_when_the_product_has_no_address():
    assert sms_text(ProductType.VIRTUAL_HOST, None, "Pa55-word") == (
        "【tihuo】您的云虚拟主机已开通，登录密码：Pa55-word，请登录后及时修改密码。"
    )


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13800000001", "138****0001"),
        ("+8613800000001", "+86****0001"),
        ("12345", "****"),
        (None, "(no phone)"),
    ],
)
def test_phones_are_masked_in_logs(phone, masked):
    assert mask_phone(phone) == masked


async def test_a_notifier_failure_is_logged_and_the_order_stays_active(rt, member, caplog):
    class BrokenNotifier:
        async def send_sms(self, phone, text, *, secret):  # type: ignore[no-untyped-def]
            raise RuntimeError(f"gateway rejected {text}")

    placed = await place_order(rt, member.id)
    provisioner = RecordingProvisioner(SimulatedProvisioner(rt))

    await provision_once(rt, provisioner=provisioner, notifier=BrokenNotifier())

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, len(state.instances)) == (
        OrderStatus.ACTIVE,
        JobStatus.DONE,
        1,
    )
    password = provisioner.requests[0].login_password
    [failure] = [r for r in caplog.records if getattr(r, "event", None) == "provisioning.notify_failed"]
    assert "******" in failure.getMessage()
    assert all(password not in r.getMessage() and not r.exc_info for r in caplog.records)


# ---------------------------------------------------------------- the simulated provisioner


async def test_two_orders_on_one_line_get_different_addresses(rt, member):
    first = await place_order(rt, member.id)
    second = await place_order(rt, member.id)

    await provision_once(rt)
    await provision_once(rt)

    addresses = [
        (await order_state(rt, placed.order_id)).instances[0].ip_address for placed in (first, second)
    ]
    assert addresses == ["198.51.100.1", "198.51.100.2"]


def request_for(
    order_no: str, *, line_code: str = "sh-bgp", ip_pool: str = "198.51.100.0/24"
) -> ProvisionRequest:
    return ProvisionRequest(
        order_no=order_no,
        product_type=ProductType.CLOUD_SERVER,
        region_name="华东-上海",
        line_code=line_code,
        line_name="上海 BGP",
        ip_pool=ip_pool,
        config={},
        os_image_code="ubuntu-22.04",
        login_password="Aa1!Aa1!Aa1!Aa1!",
        member_id=1,
    )


async def test_the_simulated_provisioner_gives_one_order_the_same_address_again(rt):
    provisioner = SimulatedProvisioner(rt)

    first = await provisioner.provision(request_for("A1"))
    again = await provisioner.provision(request_for("A1"))
    other = await provisioner.provision(request_for("A2"))
    other_line = await provisioner.provision(request_for("A3", line_code="hk-cn2", ip_pool="203.0.113.0/25"))

    assert first == again == Active("198.51.100.1", "sim-A1")
    assert other == Active("198.51.100.2", "sim-A2")
    assert other_line == Active("203.0.113.1", "sim-A3")


async def test_concurrent_calls_never_hand_out_one_address_twice(rt):
    provisioner = SimulatedProvisioner(rt)

    results = await asyncio.gather(*(provisioner.provision(request_for(f"C{i}")) for i in range(8)))

    assert sorted(r.ip_address for r in results) == sorted(f"198.51.100.{i}" for i in range(1, 9))


async def test_a_full_pool_refuses_the_next_order(rt, member):
    async with rt.db.write() as session:
        await session.execute(update(Line).where(Line.code == "sh-bgp").values(ip_pool="192.0.2.0/30"))
    orders = [await place_order(rt, member.id) for _ in range(3)]

    for _ in orders:
        await provision_once(rt)

    states = [await order_state(rt, placed.order_id) for placed in orders]
    assert [s.order.status for s in states] == [OrderStatus.ACTIVE, OrderStatus.ACTIVE, OrderStatus.FAILED]
    assert [i.ip_address for s in states for i in s.instances] == ["192.0.2.1", "192.0.2.2"]
    assert states[2].order.failure_reason == "no free address on line sh-bgp (192.0.2.0/30)"


# ---------------------------------------------------------------- refusals and retries


async def test_a_refusal_fails_the_order_with_its_reason_and_opens_nothing(rt, member, caplog):
    refusing = with_settings(rt, simulated_failure="refuse")
    placed = await place_order(rt, member.id)
    notifier = RecordingNotifier()

    await provision_once(refusing, notifier=notifier)

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.order.failure_reason, state.order.activated_at) == (
        OrderStatus.FAILED,
        "simulated refusal",
        None,
    )
    assert (state.job.status, state.job.attempts, state.job.last_error, state.job.lease_until) == (
        JobStatus.FAILED,
        1,
        "simulated refusal",
        None,
    )
    assert state.instances == []
    assert notifier.sent == []
    assert await claim_job(rt, "w2") is None
    assert [r.event for r in caplog.records if r.name == "tihuo.provisioning"] == ["provisioning.refused"]


async def test_transient_failures_are_retried_with_doubling_back_off_until_the_attempts_run_out(
    rt, member, clock
):
    # given every call failing transiently, 4 attempts, a 10 ms back-off that doubles
    start = datetime(2027, 5, 1, 8, 0, tzinfo=UTC)
    clock.set(start)
    failing = with_settings(
        rt, simulated_failure="transient", provision_max_attempts=4, provision_backoff_ms=10
    )
    placed = await place_order(rt, member.id)
    waits = []

    # when a worker takes the job each time it falls due
    for attempt in range(1, 4):
        await provision_once(failing)
        state = await order_state(rt, placed.order_id)
        assert (state.order.status, state.job.status, state.job.attempts) == (
            OrderStatus.PENDING,
            JobStatus.QUEUED,
            attempt,
        )
        assert (state.job.last_error, state.job.lease_until) == ("simulated transient failure", None)
        waits.append(state.job.run_after - clock())
        # not before it is due
        clock.set(state.job.run_after - timedelta(microseconds=1))
        assert await claim_job(failing, "w1") is None
        clock.set(state.job.run_after)
    await provision_once(failing)

    # then the back-off doubled and the fourth failure spent the retries
    assert waits == [timedelta(milliseconds=10), timedelta(milliseconds=20), timedelta(milliseconds=40)]
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.order.failure_reason) == (
        OrderStatus.FAILED,
        "retries spent: simulated transient failure",
    )
    assert (state.job.status, state.job.attempts) == (JobStatus.FAILED, 4)
    assert state.instances == []


async def test_a_provisioner_that_does_not_answer_in_time_counts_as_transient(rt, member):
    class Hanging:
        async def provision(self, request):  # type: ignore[no-untyped-def]
            await asyncio.sleep(30)

    placed = await place_order(rt, member.id)

    await provision_once(with_settings(rt, provision_timeout_seconds=0.05), provisioner=Hanging())

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.last_error) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        "no answer within 0.05 s",
    )


async def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(rt, member, caplog):
    class Buggy:
        async def provision(self, request):  # type: ignore[no-untyped-def]
            raise KeyError("ipAddress")

    placed = await place_order(rt, member.id)

    await provision_once(rt, provisioner=Buggy())

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.last_error) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        "KeyError: 'ipAddress'",
    )
    [error] = [r for r in caplog.records if getattr(r, "event", None) == "provisioning.error"]
    assert error.exc_info is not None


# ---------------------------------------------------------------- claiming and leases


async def test_concurrent_claims_take_one_job_once(rt, member):
    placed = await place_order(rt, member.id)

    claims = await asyncio.gather(*(claim_job(rt, f"w{i}") for i in range(6)))

    taken = [c for c in claims if c is not None]
    assert [c.job_id for c in taken] == [placed.job_id]
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.worker_id, state.job.attempts) == (
        OrderStatus.PROVISIONING,
        JobStatus.RUNNING,
        taken[0].worker_id,
        1,
    )
    assert state.job.lease_until == taken[0].lease_until == state.job.updated_at + timedelta(seconds=60)


async def test_the_oldest_due_job_is_taken_first(rt, member, clock):
    clock.set(datetime(2027, 5, 1, 8, 0, tzinfo=UTC))
    first = await place_order(rt, member.id)
    clock.advance(seconds=1)
    second = await place_order(rt, member.id)

    claimed = [await claim_job(rt, "w1"), await claim_job(rt, "w1"), await claim_job(rt, "w1")]

    assert [c.order_id if c else None for c in claimed] == [first.order_id, second.order_id, None]


async def test_a_dead_workers_job_is_taken_over_after_its_lease_and_finishes_once(rt, member, clock, caplog):
    # given worker A claimed the job and then went silent
    caplog.set_level(logging.INFO)
    clock.set(datetime(2027, 5, 1, 8, 0, tzinfo=UTC))
    placed = await place_order(rt, member.id)
    stale = await claim_job(rt, "worker-a")
    assert stale is not None

    # when the lease has not yet expired, nobody else may take it
    clock.advance(seconds=60)
    assert await claim_job(rt, "worker-b") is None
    # when it has, worker B takes it and opens the product
    clock.advance(microseconds=1)
    taken = await claim_job(rt, "worker-b")
    assert taken is not None and taken.attempts == 2
    await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), taken)
    # and worker A, coming back late, records nothing
    late_notifier = RecordingNotifier()
    await run_job(rt, SimulatedProvisioner(rt), late_notifier, stale)

    # then there is exactly one instance, from one provider call's address
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.worker_id, state.job.attempts) == (
        OrderStatus.ACTIVE,
        JobStatus.DONE,
        "worker-b",
        2,
    )
    assert [i.ip_address for i in await all_instances(rt)] == ["198.51.100.1"]
    assert late_notifier.sent == []
    assert [r.event for r in caplog.records if r.name == "tihuo.provisioning"] == [
        "provisioning.active",
        "provisioning.lease_lost",
    ]


# ---------------------------------------------------------------- the worker loop


class GatedProvisioner:
    """Holds every call until `gate` opens; counts how many calls are in flight at once."""

    def __init__(self, rt) -> None:  # type: ignore[no-untyped-def]
        self.inner = SimulatedProvisioner(rt)
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = 0

    async def provision(self, request):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.started += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await self.inner.provision(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_worker_starts_at_once_when_woken_and_stops_when_told(rt, member):
    # given a worker that would otherwise look only every 60 s, idle on an empty queue
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            rt, SimulatedProvisioner(rt), RecordingNotifier(), worker_id="w1", stop=stop, poll_seconds=60
        )
    )
    await asyncio.sleep(0.05)

    # when an order is placed (which sets rt.jobs_ready)
    placed = await place_order(rt, member.id)

    # then it is opened well before the next poll
    async def active() -> bool:
        return (await order_state(rt, placed.order_id)).order.status is OrderStatus.ACTIVE

    await wait_until(active, seconds=5)
    stop.set()
    await asyncio.wait_for(worker, 5)


async def test_the_worker_runs_up_to_its_concurrency_at_once(rt, member):
    limited = with_settings(rt, worker_concurrency=3)
    orders = [await place_order(rt, member.id) for _ in range(5)]
    provisioner = GatedProvisioner(limited)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(limited, provisioner, RecordingNotifier(), worker_id="w1", stop=stop, poll_seconds=0.05)
    )

    async def three_started() -> bool:
        return provisioner.started == 3

    await wait_until(three_started)
    await asyncio.sleep(0.2)
    assert (provisioner.started, provisioner.in_flight) == (3, 3)
    provisioner.gate.set()

    async def all_active() -> bool:
        states = [await order_state(rt, placed.order_id) for placed in orders]
        return all(s.order.status is OrderStatus.ACTIVE for s in states)

    await wait_until(all_active)
    stop.set()
    await asyncio.wait_for(worker, 5)
    assert provisioner.most_in_flight == 3
    assert sorted(i.ip_address for i in await all_instances(rt)) == [f"198.51.100.{n}" for n in range(1, 6)]


async def test_a_stopping_worker_hands_its_job_in_flight_back_to_the_queue(rt, member):
    placed = await place_order(rt, member.id)
    provisioner = GatedProvisioner(rt)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(rt, provisioner, RecordingNotifier(), worker_id="w1", stop=stop, poll_seconds=0.05)
    )

    async def started() -> bool:
        return provisioner.started == 1

    await wait_until(started)
    stop.set()
    await asyncio.wait_for(worker, 5)

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.lease_until, state.job.attempts) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        None,
        1,
    )
    assert state.instances == []
    taken = await claim_job(rt, "w2")
    assert taken is not None and taken.attempts == 2


# ---------------------------------------------------------------- retryProvisioning


async def failed_order(rt, member_id, **kwargs):  # type: ignore[no-untyped-def]
    placed = await place_order(rt, member_id, **kwargs)
    await provision_once(with_settings(rt, simulated_failure="refuse"))
    assert (await order_state(rt, placed.order_id)).order.status is OrderStatus.FAILED
    return placed


async def test_retry_provisioning_requeues_a_failed_order_and_wakes_the_worker(rt, admin, member, clock):
    clock.set(datetime(2027, 5, 1, 8, 0, tzinfo=UTC))
    placed = await failed_order(rt, member.id)
    clock.advance(hours=1)
    rt.jobs_ready.clear()

    order = await retry_provisioning(rt, as_admin(admin), str(placed.order_id))

    assert (order.id, order.status, order.failure_reason) == (placed.order_id, OrderStatus.PENDING, None)
    assert rt.jobs_ready.is_set()
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.order.failure_reason) == (OrderStatus.PENDING, None)
    job = state.job
    assert (job.status, job.attempts, job.run_after, job.lease_until, job.worker_id, job.last_error) == (
        JobStatus.QUEUED,
        0,
        clock(),
        None,
        None,
        None,
    )
    [entry] = await audit_rows(rt)
    assert (entry.actor_id, entry.action, entry.entity, entry.entity_id, entry.old, entry.new) == (
        admin.id,
        "order.retry_provisioning",
        "order",
        str(placed.order_id),
        {"status": "FAILED", "failure_reason": "simulated refusal"},
        {"status": "PENDING", "failure_reason": None},
    )
    # and the next attempt opens it
    await provision_once(rt)
    assert (await order_state(rt, placed.order_id)).order.status is OrderStatus.ACTIVE


async def snapshot(rt, placed):  # type: ignore[no-untyped-def]
    state = await order_state(rt, placed.order_id)
    async with rt.db.read() as session:
        card = await session.get(Card, placed.card_id)
        batch = await session.get(CardBatch, placed.batch_id)
        redemption = await session.scalar(select(Redemption).where(Redemption.order_id == placed.order_id))
        stock = await session.scalar(select(ProductModel.stock).where(ProductModel.code == "bm-e5-2650"))
    return {
        "order": (state.order.status, state.order.failure_reason),
        "job": (state.job.status, state.job.attempts, state.job.run_after, state.job.last_error),
        "card": (card.status, card.used_at, card.member_id),
        "used_count": batch.used_count,
        "cancelled_at": redemption.cancelled_at,
        "stock": stock,
        "audit": len(await audit_rows(rt)),
    }


@pytest.mark.parametrize("action", [retry_provisioning, cancel_order])
async def test_admin_order_actions_refuse_an_order_that_has_not_failed(rt, admin, member, action):
    active = await place_order(rt, member.id)
    await provision_once(rt)
    provisioning = await place_order(rt, member.id)
    assert await claim_job(rt, "w1") is not None
    pending = await place_order(rt, member.id)
    orders = (pending, active, provisioning)
    before = [await snapshot(rt, placed) for placed in orders]

    for placed in orders:
        with pytest.raises(InvalidState) as refused:
            await action(rt, as_admin(admin), str(placed.order_id))
        assert (refused.value.code, refused.value.key) == (
            ErrorCode.INVALID_STATE,
            "INVALID_STATE.order_not_failed",
        )

    assert [s["order"][0] for s in before] == [
        OrderStatus.PENDING,
        OrderStatus.ACTIVE,
        OrderStatus.PROVISIONING,
    ]
    assert [await snapshot(rt, placed) for placed in orders] == before


@pytest.mark.parametrize("action", [retry_provisioning, cancel_order])
async def test_admin_order_actions_refuse_unknown_orders_and_members(rt, admin, member, action):
    placed = await failed_order(rt, member.id)
    before = await snapshot(rt, placed)

    for unknown in ("999999", "abc", "", "1" * 40):
        with pytest.raises(NotFound):
            await action(rt, as_admin(admin), unknown)
    with pytest.raises(Forbidden):
        await action(rt, as_admin(member), str(placed.order_id))

    assert await snapshot(rt, placed) == before


# ---------------------------------------------------------------- cancelOrder


async def test_cancelling_a_failed_bare_metal_order_gives_back_the_card_the_count_and_the_stock(
    rt, admin, member, clock
):
    clock.set(datetime(2027, 5, 1, 8, 0, tzinfo=UTC))
    placed = await failed_order(rt, member.id, product_type=ProductType.BARE_METAL, months=3)
    before = await snapshot(rt, placed)
    assert (before["card"][0], before["used_count"], before["stock"]) == (CardStatus.USED, 1, 4)
    clock.advance(hours=2)

    order = await cancel_order(rt, as_admin(admin), str(placed.order_id))

    assert (order.id, order.status) == (placed.order_id, OrderStatus.CANCELLED)
    after = await snapshot(rt, placed)
    assert after == {
        "order": (OrderStatus.CANCELLED, "simulated refusal"),
        "job": before["job"],
        "card": (CardStatus.UNUSED, None, None),
        "used_count": 0,
        "cancelled_at": clock(),
        "stock": 5,
        "audit": 1,
    }
    [entry] = await audit_rows(rt)
    assert (entry.actor_id, entry.action, entry.entity, entry.entity_id, entry.old, entry.new) == (
        admin.id,
        "order.cancel",
        "order",
        str(placed.order_id),
        {"status": "FAILED", "card_id": placed.card_id, "card_status": "USED"},
        {"status": "CANCELLED", "card_id": placed.card_id, "card_status": "UNUSED"},
    )
    # a cancelled order cannot be cancelled or retried again
    with pytest.raises(InvalidState):
        await cancel_order(rt, as_admin(admin), str(placed.order_id))
    with pytest.raises(InvalidState):
        await retry_provisioning(rt, as_admin(admin), str(placed.order_id))
    assert await snapshot(rt, placed) == after


async def test_cancelling_a_cloud_server_order_takes_nothing_from_stock(rt, admin, member):
    placed = await failed_order(rt, member.id)

    await cancel_order(rt, as_admin(admin), str(placed.order_id))

    after = await snapshot(rt, placed)
    assert (after["order"][0], after["card"], after["used_count"], after["stock"]) == (
        OrderStatus.CANCELLED,
        (CardStatus.UNUSED, None, None),
        0,
        5,
    )
