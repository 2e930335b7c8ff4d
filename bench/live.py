"""Live order status benchmark (issue 13, RULES-v2 §4). Prints its figures; not a test.

    python bench/live.py [--backend sqlite|postgres|both] [--subscribers 1000] [--turn 8] [--rounds 4]

Per back-end, on a fresh database:
  1. SUBSCRIBERS members each redeem two cards (through the services, before any server starts),
     and their jobs are held back (run_after a day ahead).
  2. The subscribers' API process starts: on SQLite `tihuo serve` (the worker runs in it, as it must
     there); on PostgreSQL a uvicorn API process without a worker, and a second process, `tihuo
     serve`, whose worker changes the orders, so every notice crosses processes.
  3. SUBSCRIBERS WebSocket connections, each signed in as its member, subscribe to orderUpdates of
     the member's own order and get its first message (PENDING). The process's RSS is read before
     and after they connect.
  4. The watched orders' jobs are released; as each order turns ACTIVE its subscriber notes when the message came.
     Figures: from the commit to the message, p50 / p99 / max, the commit's time being that of the
     worker's `provisioning.active` log line (written right after the commit, to the millisecond);
     and how fast the worker turned them ACTIVE.
  5. Redemption throughput through one API process without a worker, as bench/redeem.py measures
     it (the worker's processes are stopped; on SQLite a uvicorn API process takes the place of
     `tihuo serve`): 16 clients, each taking turns among its members' tokens, in turns of
     TURN seconds: without any subscriber; with every member watching its second order (still
     PENDING: the issue's setting, 1,000 open subscriptions each to its own order); and with every
     member subscribed to myOrderUpdates (each redemption's new order reaches one subscriber, so
     each redemption also makes a message); each measured once the server has set them all up.
     ROUNDS rounds of the three turns, in the reverse order every other round (so a machine that
     slows down or speeds up over the run, as a shared one does, moves each label alike); the
     ratio of a label's mean to the mean without subscribers, each round's own ratio, and the
     server's CPU time per redemption, which the machine's other tenants move less.
PostgreSQL: TIHUO_BENCH_POSTGRES_URL (default …/tihuo_bench, created when missing, reset).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import websockets
from sqlalchemy import text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cards import PG_URL, SECRET, fresh_postgres  # noqa: E402
from bench.redeem import REDEEM, batch_codes, cloud_server_batch, db_scalar, drive, free_port  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Keys  # noqa: E402
from core.security import TokenClaims, issue_token  # noqa: E402
from core.settings import load_settings  # noqa: E402
from models import ProvisioningJob, Role  # noqa: E402
from services import redemption  # noqa: E402
from services.accounts import create_user  # noqa: E402
from services.catalog_loading import load_catalog_text  # noqa: E402
from services.runtime import Caller, Runtime  # noqa: E402
from tests.processes import UVICORN, rss_mib  # noqa: E402
from tihuo.migrate import migrate  # noqa: E402

CATALOG = ROOT / "tests" / "fixtures" / "catalog.toml"
ORDER_UPDATES = "subscription($id: ID!){ orderUpdates(orderId: $id) { id status } }"
MY_ORDER_UPDATES = "subscription { myOrderUpdates { id status } }"
CLIENTS = 16
THROUGHPUT_CARDS = 40_000


async def setup(backend: str, workdir: Path, subscribers: int) -> tuple[Runtime, list[Any], list[str], str]:
    """The database, SUBSCRIBERS members (tokens) each with two PENDING orders held back (one watched
    until ACTIVE, one watched idle during the throughput runs), and codes."""
    if backend == "postgres":
        await fresh_postgres()
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    # cheap password hashes: a thousand members are made here, none ever signs in with a password
    settings = load_settings(
        _env_file=None,
        data_dir=workdir,
        database_url=url,
        secret_key=SECRET,
        max_batch_quantity=THROUGHPUT_CARDS,
        password_time_cost=1,
        password_memory_kib=64,
    )
    db = Database(url)
    await migrate(db.write_engine)
    rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
    # the example catalog, but with room on its line for every order's address (it has a /24)
    catalog = CATALOG.read_text(encoding="utf-8").replace('"198.51.100.0/24"', '"10.64.0.0/16"')
    await load_catalog_text(db, catalog)
    admin = Caller(
        viewer=await create_user(rt, username="bench-admin", password="bench password 1", role=Role.ADMIN)
    )
    line = await db_scalar(rt, "SELECT id FROM lines WHERE code = 'sh-bgp'")
    image = str(await db_scalar(rt, "SELECT id FROM os_images WHERE code = 'centos-7.9'"))
    watched = await cloud_server_batch(rt, admin, line, 2 * subscribers, name="watched")
    codes = await batch_codes(rt, admin, watched.id, "bench password 1")
    expires = rt.now() + timedelta(days=1)
    members: list[Any] = []
    for index in range(subscribers):
        viewer = await create_user(
            rt, username=f"bench-member-{index}", password="bench password 1", role=Role.MEMBER
        )
        orders = [
            (
                await redemption.redeem_card(
                    rt, Caller(viewer=viewer), redemption.RedeemRequest(code=code, os_image_id=image)
                )
            ).order.id
            for code in codes[2 * index : 2 * index + 2]
        ]
        members.append((issue_token(rt.keys.token, TokenClaims(viewer.id, 1, expires)), *orders))
    async with rt.db.write() as session:
        await session.execute(update(ProvisioningJob).values(run_after=rt.now() + timedelta(days=1)))
    spare = await cloud_server_batch(rt, admin, line, THROUGHPUT_CARDS, name="redeemed")
    return rt, members, await batch_codes(rt, admin, spare.id, "bench password 1"), image


def serve_with_worker(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """`tihuo serve`: an API process with the provisioning worker in it, its log lines in `log`."""
    return start([sys.executable, "-m", "tihuo.cli", "serve", "--port", str(port)], env, port, log)


def start_api(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """An API process without a worker, as the README deploys it (tests.processes.UVICORN)."""
    command = [sys.executable, *UVICORN, "--port", str(port), "--log-level", "warning"]
    return start(command, env, port, None)


def start(command: list[str], env: dict[str, str], port: int, log: Path | None) -> subprocess.Popen[bytes]:
    with (log or Path(os.devnull)).open("wb") as written:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT), "TIHUO_LOG_LEVEL": "INFO" if log else "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=written,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command} did not start")


class Subscriber:
    """One WebSocket, signed in as one member, with one subscription at a time."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.ws: Any = None

    async def open(self, query: str, variables: dict[str, Any], wait_first: bool) -> None:
        self.ws = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"], max_queue=64)
        await self.ws.send(
            orjson.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            ).decode()
        )
        assert orjson.loads(await self.ws.recv())["type"] == "connection_ack"
        await self.ws.send(
            orjson.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
            ).decode()
        )
        if wait_first:
            await self.message()

    async def message(self) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = orjson.loads(await self.ws.recv())
            if message["type"] == "ping":
                await self.ws.send('{"type":"pong"}')
                continue
            return message

    async def until_active(self, arrived: dict[int, float]) -> None:
        while True:
            message = await self.message()
            if message["type"] == "next":
                order = message["payload"]["data"]["orderUpdates"]
                if order["status"] == "ACTIVE":
                    arrived[int(order["id"])] = time.time()
            elif message["type"] == "complete":
                return
            else:
                raise RuntimeError(message)

    async def drain(self) -> None:
        """Read (and drop) what comes, as a portal would show it."""
        try:
            while True:
                await self.message()
        except websockets.ConnectionClosed:
            return

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def open_all(
    subscribers: list[Subscriber], query: str, variables: list[dict[str, Any]], first: bool
) -> None:
    gate = asyncio.Semaphore(50)

    async def one(subscriber: Subscriber, given: dict[str, Any]) -> None:
        async with gate:
            await subscriber.open(query, given, first)

    await asyncio.gather(*(one(s, v) for s, v in zip(subscribers, variables, strict=True)))


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settled(pid: int) -> None:
    """Until the process is (nearly) idle: the subscriptions it was sent are all set up."""
    while True:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if cpu_seconds(pid) - before < 0.05:
            return


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * share) - 1)]


async def run(backend: str, subscribers: int, turn: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(f"\n== {backend}: {subscribers} subscribers", flush=True)
        started = time.perf_counter()
        rt, members, codes, image = await setup(backend, workdir, subscribers)
        print(f"  set-up: {time.perf_counter() - started:.0f} s", flush=True)
        env = {
            "TIHUO_DATABASE_URL": rt.settings.resolved_database_url,
            "TIHUO_SECRET_KEY": SECRET,
            "TIHUO_DATA_DIR": str(workdir),
            "TIHUO_LOG_LEVEL": "WARNING",
            "TIHUO_SIMULATED_DELAY_MS": "20",
            "TIHUO_WORKER_POLL_SECONDS": "0.05",
        }
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIHUO_")}, **env}
        port = free_port()
        processes = []
        worker_log = workdir / "worker.log"
        if backend == "sqlite":
            served = serve_with_worker(env, port, worker_log)
            processes.append(served)
        else:
            served = start_api(env, port)
            processes += [served, serve_with_worker(env, free_port(), worker_log)]
        ws_url = f"ws://127.0.0.1:{port}/graphql"
        try:
            await asyncio.sleep(1)
            rss_before = rss_mib(served.pid)
            watchers = [Subscriber(ws_url, token) for token, _, _ in members]
            await open_all(watchers, ORDER_UPDATES, [{"id": str(order)} for _, order, _ in members], True)
            await settled(served.pid)
            rss_after = rss_mib(served.pid)
            print(
                f"  server RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB with {subscribers} "
                f"connections subscribed ({rss_after - rss_before:.0f} MiB for them)",
                flush=True,
            )
            arrived: dict[int, float] = {}
            waiting = [asyncio.create_task(w.until_active(arrived)) for w in watchers]
            async with rt.db.write() as session:
                await session.execute(
                    update(ProvisioningJob)
                    .where(ProvisioningJob.order_id.in_([order for _, order, _ in members]))
                    .values(run_after=rt.now() - timedelta(seconds=1))
                )
            async with asyncio.timeout(600):
                await asyncio.gather(*waiting)
            async with rt.db.read() as session:
                numbers = dict((await session.execute(text("SELECT order_no, id FROM orders"))).all())
            committed = _commits(worker_log, numbers)
            delays = [(arrived[order] - committed[order]) * 1000 for order in arrived]
            span = max(committed.values()) - min(committed.values())
            print(
                f"  commit -> message for {len(delays)} of {subscribers} orders turning ACTIVE: "
                f"p50 {statistics.median(delays):.1f} ms, p99 {percentile(delays, 0.99):.1f} ms, "
                f"max {max(delays):.1f} ms (the worker turned them ACTIVE over {span:.1f} s, "
                f"{len(delays) / max(span, 0.001):.0f}/s)",
                flush=True,
            )
            await asyncio.gather(*(w.close() for w in watchers))

            # the throughput as bench/redeem.py measures it: one API process, no worker anywhere
            for process in processes[1:] if backend == "postgres" else processes:
                process.terminate()
                process.wait(20)
            if backend == "sqlite":
                port = free_port()
                processes.append(start_api(env, port))
                ws_url = f"ws://127.0.0.1:{port}/graphql"
            url = f"http://127.0.0.1:{port}/graphql"
            tokens = [token for token, _, _ in members]
            idle = [{"id": str(order)} for _, _, order in members]
            turns = [tokens[i::CLIENTS] for i in range(CLIENTS)]
            # what a turn used is taken off the front: each request takes the next card
            work = [{"c": code, "os": image} for code in codes]
            labels = ("without", "watching", "mine")
            results: dict[str, list[float]] = {label: [] for label in labels}
            cpus: dict[str, list[float]] = {label: [] for label in labels}
            warm_up = await drive(url, REDEEM, work[:200], turns, 2, "RedeemCardSuccess")
            del work[: len(warm_up.latencies)]
            for round_number in range(rounds):
                for label in labels if round_number % 2 == 0 else reversed(labels):
                    live: list[Subscriber] = []
                    draining: list[asyncio.Task[None]] = []
                    if label != "without":
                        live = [Subscriber(ws_url, token) for token in tokens]
                        if label == "watching":
                            await open_all(live, ORDER_UPDATES, idle, False)
                        else:
                            await open_all(live, MY_ORDER_UPDATES, [{}] * len(live), False)
                        draining = [asyncio.create_task(s.drain()) for s in live]
                        # measured once every subscription is set up, not while they are
                        await settled(processes[-1 if backend == "sqlite" else 0].pid)
                    cpu = cpu_seconds(processes[-1 if backend == "sqlite" else 0].pid)
                    done = await drive(url, REDEEM, work, turns, turn, "RedeemCardSuccess")
                    del work[: len(done.latencies)]
                    cpu = cpu_seconds(processes[-1 if backend == "sqlite" else 0].pid) - cpu
                    cpus[label].append(cpu * 1000 / max(done.successes, 1))
                    results[label].append(done.throughput)
                    if done.errors:
                        print(f"  ({label}: {done.errors} errors)")
                    await asyncio.gather(*(s.close() for s in live))
                    await asyncio.gather(*draining)
            if len(work) < 1000:
                print(f"  (only {len(work)} cards were left: THROUGHPUT_CARDS is too small for these turns)")
            without = statistics.mean(results["without"])
            print(
                f"  redeemCard through the subscribers' process, {without:.0f}/s without subscribers "
                f"(turns {', '.join(f'{v:.0f}' for v in results['without'])}), "
                f"the server's CPU per redemption {statistics.mean(cpus['without']):.1f} ms",
                flush=True,
            )
            for label, what in (
                ("watching", f"{subscribers} open orderUpdates, each on its member's own PENDING order"),
                ("mine", f"{subscribers} on myOrderUpdates: each redemption's new order reaches one"),
            ):
                mean = statistics.mean(results[label])
                ratios = [v / base for v, base in zip(results[label], results["without"], strict=True)]
                cpu_ratio = statistics.mean(cpus[label]) / statistics.mean(cpus["without"])
                print(
                    f"  with {what}: {mean:.0f}/s (turns {', '.join(f'{v:.0f}' for v in results[label])}), "
                    f"ratio {mean / without:.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
                    f"CPU per redemption {statistics.mean(cpus[label]):.1f} ms ({cpu_ratio:.2f}x)",
                    flush=True,
                )
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    process.wait(20)
            await rt.db.dispose()


def _commits(log: Path, numbers: dict[str, int]) -> dict[int, float]:
    """Order id -> when the worker logged it ACTIVE (right after the commit), from its JSON lines."""
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"provisioning.active"' not in line:
            continue
        entry = orjson.loads(line)
        found[numbers[entry["order_no"]]] = datetime.fromisoformat(entry["time"]).timestamp()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--turn", type=float, default=8, help="seconds of each throughput turn")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args.subscribers, args.turn, args.rounds))


if __name__ == "__main__":
    main()
