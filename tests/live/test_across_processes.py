"""PostgreSQL: an order's changes reach a subscriber whatever process made them. The subscriber is
connected to one API process (uvicorn, as deployed); the redemption goes through a second API
process and the provisioning through a `tihuo worker` process, so every notice crosses processes
through LISTEN/NOTIFY. And a process that loses its LISTEN connection makes a new one, after
which its subscribers read their orders again."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from core.settings import Settings
from services.provisioning_jobs import claim_job
from tests.live.conftest import (
    MY_ORDER_UPDATES,
    ORDER_UPDATES,
    LiveServer,
    connect,
    new_card_code,
    redeem_over_http,
)
from tests.processes import UVICORN, clean_env, free_port, healthy, spawn, stop
from tests.provisioning_helpers import place_order

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("catalog")]


@dataclass
class Processes:
    subscribed: LiveServer
    redeeming: LiveServer
    logs: list[Path]

    def log_tail(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in self.logs)


@pytest.fixture
async def processes(settings: Settings, tmp_path: Path) -> AsyncIterator[Processes]:
    env = clean_env(
        TIHUO_DATABASE_URL=settings.resolved_database_url,
        TIHUO_SECRET_KEY=settings.secret_key or "",
        TIHUO_DATA_DIR=str(tmp_path / "process-data"),
        TIHUO_LOG_LEVEL="WARNING",
        # long enough that PROVISIONING is seen before ACTIVE
        TIHUO_SIMULATED_DELAY_MS="400",
        TIHUO_WORKER_POLL_SECONDS="0.1",
    )
    ports = [free_port(), free_port()]
    logs = [tmp_path / "api-subscribed.log", tmp_path / "api-redeeming.log", tmp_path / "worker.log"]
    apis = [
        spawn([sys.executable, *UVICORN, "--port", str(port), "--log-level", "warning"], env, log)
        for port, log in zip(ports, logs, strict=False)
    ]
    worker = spawn([sys.executable, "-m", "tihuo.cli", "worker"], env, logs[2])
    try:
        for port, api in zip(ports, apis, strict=True):
            await healthy(f"http://127.0.0.1:{port}", api)
        yield Processes(
            LiveServer(f"http://127.0.0.1:{ports[0]}", None),
            LiveServer(f"http://127.0.0.1:{ports[1]}", None),
            logs,
        )
    finally:
        stop([*apis, worker])


async def test_changes_made_by_other_processes_reach_the_subscriber(rt, member, processes):
    code, image = await new_card_code(rt)
    async with connect(processes.subscribed, member.token) as client:
        await client.subscribe("mine", MY_ORDER_UPDATES)
        await client.nothing_more(0.3)
        order_id = await redeem_over_http(processes.redeeming.url, member.token, code, image)
        seen = []
        for _ in range(3):
            order = await client.next_order("mine", "myOrderUpdates")
            assert order["id"] == order_id, processes.log_tail()
            seen.append(order["status"])
        assert seen == ["PENDING", "PROVISIONING", "ACTIVE"], processes.log_tail()
        assert order["instance"]["status"] == "RUNNING"
        await client.nothing_more(0.3)


async def test_after_a_lost_listen_connection_subscribers_read_their_orders_again(rt, member, live):
    placed = await place_order(rt, member.id)
    listener = live.app.state.listener
    async with connect(live, member.token) as client:
        await client.subscribe("one", ORDER_UPDATES, {"id": str(placed.order_id)})
        assert (await client.next_order("one", "orderUpdates"))["status"] == "PENDING"
        async with rt.db.write() as session:
            ended = await session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'tihuo-notices' AND pid <> pg_backend_pid()"
                )
            )
        assert ended == 1
        # claimed while nobody listens: its notice is lost, the re-read after the reconnect is not
        await claim_job(rt, "w1")
        assert (await client.next_order("one", "orderUpdates"))["status"] == "PROVISIONING"
    assert listener.reconnects == 1
