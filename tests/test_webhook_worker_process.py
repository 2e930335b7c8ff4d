"""A `tihuo worker` process killed mid-delivery (the receiver hangs, then kill -9): nobody sends the
message while its lease runs; after it, another worker delivers the same message (same webhook-id,
same body), verified by the standardwebhooks package."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.provisioners import SimulatedProvisioner
from services.webhook_delivery import claim_deliveries
from services.worker import run_worker
from tests.api.test_webhooks import delivery_rows, make_endpoint, redeem_one
from tests.provisioning_helpers import RecordingNotifier, wait_until
from tests.test_worker_process import start_worker, worker_id_of
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("catalog")

LEASE_SECONDS = 5


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = Receiver(default="hang").start()
    yield started
    started.stop()


async def test_a_worker_killed_mid_delivery_is_taken_over_after_its_lease_with_the_same_message(
    gql, client, rt, settings, admin, member, receiver, tmp_path
):
    # given a card.redeemed message and a worker process whose POST the receiver leaves hanging
    await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    await redeem_one(gql, client, admin, member)
    process, _ = start_worker(
        settings,
        tmp_path,
        TIHUO_WEBHOOK_ALLOW_PRIVATE="true",
        TIHUO_WEBHOOK_LEASE_SECONDS=str(LEASE_SECONDS),
        TIHUO_WEBHOOK_TIMEOUT_SECONDS=str(LEASE_SECONDS - 1),
    )
    try:
        assert await asyncio.to_thread(receiver.arrived.wait, 30)
        [held] = await delivery_rows(rt)
        assert (held.status.value, held.attempts, held.worker_id) == ("PENDING", 1, worker_id_of(process))
    finally:
        # when it dies mid-POST
        process.kill()
        process.wait()
    receiver.default = "ok"

    # then nobody sends it while the lease runs
    assert await claim_deliveries(rt, "rescuer", 10) == []
    assert held.lease_until is not None
    await asyncio.sleep(max(0.0, (held.lease_until - rt.now()).total_seconds()) + 0.05)
    # and after it, another worker delivers the same message
    stop = asyncio.Event()
    rescuer = asyncio.create_task(
        run_worker(
            rt,
            SimulatedProvisioner(rt),
            RecordingNotifier(),
            worker_id="rescuer",
            stop=stop,
            poll_seconds=0.1,
        )
    )

    async def delivered() -> bool:
        return (await delivery_rows(rt))[0].status.value == "DELIVERED"

    try:
        await wait_until(delivered, seconds=10)
    finally:
        stop.set()
        await asyncio.wait_for(rescuer, 10)

    [done] = await delivery_rows(rt)
    assert (done.attempts, done.worker_id, done.last_status_code) == (2, "rescuer", 204)
    killed, taken_over = receiver.received
    assert taken_over.webhook_id == killed.webhook_id
    assert taken_over.body == killed.body
    assert killed.verified_by == taken_over.verified_by == (0,)
