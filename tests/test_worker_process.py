"""Workers as real processes: one killed mid-job is taken over once its lease expires and the job
finishes exactly once; one told to stop hands its job back; `tihuo serve`'s app runs one in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from models import JobStatus, OrderStatus
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job
from services.worker import run_worker
from tests.provisioning_helpers import RecordingNotifier, all_instances, order_state, place_order, wait_until

pytestmark = pytest.mark.usefixtures("catalog")

LEASE_SECONDS = 5


def start_worker(settings, tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:  # type: ignore[no-untyped-def]
    """`tihuo worker` in its own process on the test's database; its log goes to a file."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TIHUO_")}
    environment.update(
        TIHUO_DATABASE_URL=settings.resolved_database_url,
        TIHUO_SECRET_KEY=settings.secret_key,
        TIHUO_DATA_DIR=str(tmp_path / "worker-data"),
        TIHUO_WORKER_POLL_SECONDS="0.1",
        TIHUO_PROVISION_LEASE_SECONDS=str(LEASE_SECONDS),
        # a call must end within its lease (tihuo/settings.py)
        TIHUO_PROVISION_TIMEOUT_SECONDS=str(LEASE_SECONDS - 1),
        **env,
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tihuo.cli", "worker"],
            env=environment,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


def worker_id_of(process: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}:{process.pid}"


async def wait_for_exit(process: subprocess.Popen[bytes], seconds: float = 10) -> int:
    async with asyncio.timeout(seconds):
        while process.poll() is None:  # noqa: ASYNC110 (a child process, not an Event)
            await asyncio.sleep(0.05)
    return process.returncode


async def held_by(rt, placed, worker_id: str, seconds: float = 15) -> None:  # type: ignore[no-untyped-def]
    async def running() -> bool:
        job = (await order_state(rt, placed.order_id)).job
        return job.status is JobStatus.RUNNING and job.worker_id == worker_id

    await wait_until(running, seconds=seconds)


async def test_a_worker_killed_mid_job_is_taken_over_after_its_lease_and_the_job_finishes_once(
    rt, settings, member, tmp_path
):
    # given a worker process that takes 5 s per call, holding the job under a 5 s lease
    placed = await place_order(rt, member.id)
    process, log_path = start_worker(settings, tmp_path, TIHUO_SIMULATED_DELAY_MS="5000")
    try:
        await held_by(rt, placed, worker_id_of(process))
    finally:
        # when it dies mid-call
        process.kill()
        process.wait()
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.attempts) == (OrderStatus.PROVISIONING, 1)

    # then nobody else takes the job while its lease runs
    assert await claim_job(rt, "rescuer") is None
    # and once it has run out, another worker takes it and opens the product
    await asyncio.sleep(max(0.0, (state.job.lease_until - rt.now()).total_seconds()) + 0.05)
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

    async def active() -> bool:
        return (await order_state(rt, placed.order_id)).order.status is OrderStatus.ACTIVE

    try:
        await wait_until(active, seconds=5)
    finally:
        stop.set()
        await asyncio.wait_for(rescuer, 5)

    # exactly once
    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.attempts, state.job.worker_id) == (
        OrderStatus.ACTIVE,
        JobStatus.DONE,
        2,
        "rescuer",
    )
    assert [(i.order_id, i.ip_address) for i in await all_instances(rt)] == [
        (placed.order_id, "198.51.100.1")
    ]
    events = [json.loads(line).get("event") for line in log_path.read_text(encoding="utf-8").splitlines()]
    assert "worker.start" in events


async def test_a_worker_told_to_stop_hands_its_job_back_at_once_and_exits_cleanly(
    rt, settings, member, tmp_path
):
    placed = await place_order(rt, member.id)
    process, log_path = start_worker(settings, tmp_path, TIHUO_SIMULATED_DELAY_MS="30000")
    try:
        await held_by(rt, placed, worker_id_of(process))
        process.send_signal(signal.SIGTERM)
        assert await wait_for_exit(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.lease_until, state.job.attempts) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        None,
        1,
    )
    assert state.instances == []
    events = [json.loads(line).get("event") for line in log_path.read_text(encoding="utf-8").splitlines()]
    assert events[-2:] == ["provisioning.released", "worker.stop"]


async def test_the_served_app_runs_a_worker_in_its_lifespan(rt, member):
    from services.worker import default_worker_id
    from tihuo.app import create_app

    app = create_app(runtime=rt, start_worker=True)

    async with app.router.lifespan_context(app):
        placed = await place_order(rt, member.id)

        async def active() -> bool:
            return (await order_state(rt, placed.order_id)).order.status is OrderStatus.ACTIVE

        await wait_until(active, seconds=5)

    state = await order_state(rt, placed.order_id)
    assert (state.job.status, state.job.worker_id) == (JobStatus.DONE, default_worker_id())
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "provisioning-worker"]


async def test_an_app_built_without_the_worker_leaves_jobs_queued(rt, member):
    from tihuo.app import create_app

    app = create_app(runtime=rt)

    async with app.router.lifespan_context(app):
        placed = await place_order(rt, member.id)
        await asyncio.sleep(0.3)

    state = await order_state(rt, placed.order_id)
    assert (state.order.status, state.job.status, state.job.attempts) == (
        OrderStatus.PENDING,
        JobStatus.QUEUED,
        0,
    )
