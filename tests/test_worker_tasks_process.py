"""Workers as real processes with a platform that accepts and finishes later (RULES-v2 §3): a
worker killed while its tasks wait on the platform loses nothing, since waiting is only rows; two
other workers finish every task, each task looked at by one worker at a time, one create and one
SMS per order."""

from __future__ import annotations

import pytest

from models import OrderStatus
from tests.fake_provider import serve_platform
from tests.provisioning_helpers import order_state, place_order, wait_until
from tests.test_worker_process import start_worker, worker_id_of

pytestmark = pytest.mark.usefixtures("catalog")

ORDERS = 6


def platform_env(url: str, secret: str) -> dict[str, str]:
    return {
        "TIHUO_PROVISIONER": "http",
        "TIHUO_PROVISIONER_URL": f"{url}/provision",
        "TIHUO_PROVISIONER_SECRET": secret,
        "TIHUO_NOTIFIER": "http",
        "TIHUO_NOTIFIER_URL": f"{url}/sms",
        "TIHUO_NOTIFIER_SECRET": secret,
    }


async def test_a_worker_killed_while_tasks_wait_leaves_them_to_the_others_each_polled_by_one(
    rt, settings, member, tmp_path
):
    async with serve_platform(finish_after=6) as platform:
        placed = [await place_order(rt, member.id) for _ in range(ORDERS)]
        env = platform_env(platform.url, platform.secret)
        for name in ("first", "second", "third"):
            (tmp_path / name).mkdir()
        first, _ = start_worker(settings, tmp_path / "first", **env)

        async def all_accepted() -> bool:
            states = [await order_state(rt, p.order_id) for p in placed]
            return all(s.order.external_task_id is not None for s in states)

        try:
            # a busy machine may take a while to start a process (a wait, not a timing)
            await wait_until(all_accepted, seconds=90)
        finally:
            # the worker dies while every task waits on the platform
            first.kill()
            first.wait()
        states = [await order_state(rt, p.order_id) for p in placed]
        assert {s.order.status for s in states} == {OrderStatus.PROVISIONING}

        rescuers = [start_worker(settings, tmp_path / name, **env)[0] for name in ("second", "third")]

        async def all_active_and_texted() -> bool:
            # the SMS goes after the commit that makes the order ACTIVE: wait for both
            states = [await order_state(rt, p.order_id) for p in placed]
            texted = len(platform.calls("POST", "/sms")) == ORDERS
            return texted and all(s.order.status is OrderStatus.ACTIVE for s in states)

        try:
            await wait_until(all_active_and_texted, seconds=120)
        finally:
            for process in rescuers:
                process.kill()
                process.wait()

        # one create and one SMS per order; no task was ever looked at by two workers at once
        assert platform.creates == {p.order_no: 1 for p in placed}
        assert platform.most_at_once == 1
        assert platform.refused == 0
        assert len(platform.calls("POST", "/sms")) == ORDERS
        states = [await order_state(rt, p.order_id) for p in placed]
        assert all(len(s.instances) == 1 for s in states)
        # and the rescuers finished them: the dead worker's name is on none
        assert {s.job.worker_id for s in states} <= {worker_id_of(r) for r in rescuers}
