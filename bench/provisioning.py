"""Provisioning on a platform that takes its time (issue 12). Prints its figures; not a test.

    python bench/provisioning.py [--backend sqlite|postgres] [--orders 1000] [--finish 60]

On a fresh database, 1,000 cards are redeemed in a burst (in this process, through the redemption
service, 50 at a time) while one `tihuo worker` process with default settings provisions them on
the tests' platform (tests/fake_provider.FakePlatform on loopback, following
docs/provisioning-bridge.openapi.yaml): it accepts every create at once and finishes each task
FINISH seconds after it was accepted. Printed: the burst's duration, the time from the burst's end
until every order is ACTIVE (target: within 90 s with FINISH=60), the worker's RSS when idle before
the burst and after (target: flat, ± 20 MB), the creates and polls the platform saw.
A second run does the same with half of the status polls answered 500 (at random); printed: the duplicate
creates per idempotency key (must be 0) and the same times.
PostgreSQL: TIHUO_BENCH_POSTGRES_URL (default …/tihuo_h1; its public schema is dropped and re-created).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TIHUO_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/tihuo_h1")

from bench.redeem import db_scalar, setup  # noqa: E402
from bench.soak import rss_mb  # noqa: E402
from models import Role, User  # noqa: E402
from services import redemption  # noqa: E402
from services.runtime import Caller, Runtime, Viewer  # noqa: E402
from tests.fake_provider import FakePlatform, serve_platform  # noqa: E402

MEMBERS = 20
AT_ONCE = 50


def start_worker(rt: Runtime, platform: FakePlatform, workdir: Path) -> subprocess.Popen[bytes]:
    """`tihuo worker` with default settings but for the platform's address and secrets."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TIHUO_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TIHUO_DATABASE_URL=rt.settings.resolved_database_url,
        TIHUO_SECRET_KEY=rt.settings.secret_key or "",
        TIHUO_DATA_DIR=str(workdir / "worker-data"),
        TIHUO_PROVISIONER="http",
        TIHUO_PROVISIONER_URL=f"{platform.url}/provision",
        TIHUO_PROVISIONER_SECRET=platform.secret,
        TIHUO_NOTIFIER="http",
        TIHUO_NOTIFIER_URL=f"{platform.url}/sms",
        TIHUO_NOTIFIER_SECRET=platform.secret,
        TIHUO_LOG_LEVEL="WARNING",
    )
    log = (workdir / "worker.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "tihuo.cli", "worker"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def members(rt: Runtime) -> list[Caller]:
    async with rt.db.read() as session:
        rows = (await session.execute(select(User.id, User.username).where(User.role == Role.MEMBER))).all()
    return [Caller(viewer=Viewer(id=row.id, username=row.username, role=Role.MEMBER)) for row in rows]


async def burst(rt: Runtime, callers: list[Caller], codes: list[str], image: str) -> float:
    started = time.perf_counter()
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(index: int, code: str) -> None:
        async with gate:
            await redemption.redeem_card(
                rt, callers[index % len(callers)], redemption.RedeemRequest(code=code, os_image_id=image)
            )

    await asyncio.gather(*(one(index, code) for index, code in enumerate(codes)))
    return time.perf_counter() - started


async def run_once(backend: str, orders: int, finish: float, poll_error_rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rt, codes, _, image = await setup(backend, workdir, orders, MEMBERS)
        callers = await members(rt)
        try:
            async with serve_platform(finish_after=finish, poll_error_rate=poll_error_rate) as platform:
                worker = start_worker(rt, platform, workdir)
                try:
                    await asyncio.sleep(5)  # started and idle
                    if worker.poll() is not None:
                        raise RuntimeError((workdir / "worker.log").read_text())
                    rss_before = rss_mb(worker.pid)
                    took = await burst(rt, callers, codes, image)
                    ended = time.perf_counter()
                    active = 0
                    all_accepted = None
                    while active < orders:
                        await asyncio.sleep(0.5)
                        active = int(
                            await db_scalar(rt, "SELECT count(*) FROM orders WHERE status = 'ACTIVE'") or 0
                        )
                        if all_accepted is None:
                            accepted = await db_scalar(
                                rt, "SELECT count(*) FROM orders WHERE external_task_id IS NOT NULL"
                            )
                            if int(accepted or 0) >= orders:
                                all_accepted = time.perf_counter() - ended
                        if time.perf_counter() - ended > 900:
                            raise RuntimeError(f"only {active} of {orders} ACTIVE after 900 s")
                    all_active = time.perf_counter() - ended
                    rss_after = rss_mb(worker.pid)
                finally:
                    worker.terminate()
                    worker.wait(30)
                duplicates = sum(count - 1 for count in platform.creates.values())
                errors = sum(1 for _, status, _ in platform.answered if status == 500)
                label = "polls answering 500 half of the time" if poll_error_rate else "every poll answered"
                print(f"[{backend}] {label}:")
                print(
                    f"  {orders} redemptions in a burst of {took:.1f} s; tasks finish {finish:g} s after acceptance"
                )
                print(f"  all accepted by the platform {all_accepted or 0:.1f} s after the burst")
                print(f"  all ACTIVE {all_active:.1f} s after the burst")
                print(
                    f"  worker RSS idle before {rss_before:.1f} MB, after {rss_after:.1f} MB ({rss_after - rss_before:+.1f} MB)"
                )
                print(
                    f"  platform: {sum(platform.creates.values())} creates for {len(platform.creates)} keys "
                    f"(duplicate creates per key: {duplicates}), {platform.polls} polls ({errors} answered 500), "
                    f"most polls of one task at once: {platform.most_at_once}"
                )
        finally:
            await rt.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--finish", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(run_once(args.backend, args.orders, args.finish, poll_error_rate=0.0))
    asyncio.run(run_once(args.backend, args.orders, args.finish, poll_error_rate=0.5))


if __name__ == "__main__":
    main()
