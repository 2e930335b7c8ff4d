"""Soak benchmark (issue: ready for production, 7). Prints its figures; not a test.

    python bench/soak.py [--backend sqlite|postgres|both] [--seconds 60]
                         [--member-clients 8] [--admin-clients 2] [--members 600]

Per back-end, on a fresh database, `tihuo serve` runs as a subprocess (migration, the API and its
in-process provisioning worker) under a mixed workload for SECONDS:
  admins (each one operation, then ~0.2 s of thought): list batches with their counts, open a
    batch's cards page, now and then create a small batch, create a download link and GET it;
  members (closed loop): preview a fresh code, then redeem it; ~10% of attempts are well-formed
    unknown codes (CARD_NOT_FOUND). Every member sends from its own address (X-Forwarded-For, which
    `tihuo serve` trusts from loopback) and there are many members, so the failed-attempt limit
    bites rarely; a RATE_LIMITED answer is an expected outcome and is counted apart.
Reported per operation: count, throughput, p50, p99, errors (HTTP errors, top-level GraphQL errors
and unexpected answers). The server's RSS (VmRSS, sampled every 0.2 s) at start, after the warm-up
(between 20% and 30% of the time) and at the end (the last 10%): each window's floor, its lowest
sample, since a download-password check holds argon2's 64 MiB for a moment and a sample taken then
says nothing about growth; the medians and the peak are printed too. PASS when the floor grew by at
most 10% after the warm-up. Then a consistency check of cards, orders and redemptions, and the
time the server's worker needs to provision the orders left when the load stops (at most 120 s).
The exit status is 0 when memory passed, nothing failed and everything is consistent.
PostgreSQL: TIHUO_BENCH_POSTGRES_URL (default …/tihuo_soak, created when missing; its public schema
is dropped and re-created).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# this benchmark's own database unless told otherwise (bench/cards.py reads the variable on import)
os.environ.setdefault("TIHUO_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/tihuo_soak")

from bench.cards import CATALOG, PG_URL, SECRET, fresh_postgres  # noqa: E402
from bench.loadgen import Connection  # noqa: E402
from bench.redeem import batch_codes, cloud_server_batch, db_scalar, free_port  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Keys  # noqa: E402
from core.security import TokenClaims, issue_token  # noqa: E402
from core.settings import load_settings  # noqa: E402
from models import Card, CardStatus, Order, OrderStatus, Redemption, Role  # noqa: E402
from services import codes  # noqa: E402
from services.accounts import create_user  # noqa: E402
from services.catalog_loading import load_catalog_text  # noqa: E402
from services.runtime import Caller, Runtime  # noqa: E402
from tihuo.migrate import migrate  # noqa: E402

ADMIN_PASSWORD = "soak admin password 1"
BAD_CODE_SHARE = 0.10
ADMIN_THINK_SECONDS = 0.2
SMALL_BATCH = 20
SEED_BATCHES = 5
RSS_SAMPLE_SECONDS = 0.2
GROWTH_LIMIT = 0.10
DRAIN_SECONDS = 120
# the simulated provisioner hands out the line's addresses: the example's /24 runs dry after 254 orders
WIDE_POOL = ('ip_pool = "198.51.100.0/24"', 'ip_pool = "10.64.0.0/12"')

LIST_BATCHES = """query { cardBatches(first: 20) { __typename totalCount
  nodes { id batchNo name quantity usedCount disabledCount downloadCount status }
  pageInfo { hasNextPage endCursor } } }"""
CARDS_PAGE = """query($id: ID!, $offset: Int) { cardBatch(id: $id) { __typename id
  cards(first: 20, offset: $offset) { totalCount nodes { id maskedCode status expired usedAt remark } } } }"""
CREATE_BATCH = """mutation($input: CreateCardBatchInput!) { createCardBatch(input: $input) {
  __typename ... on CreateCardBatchSuccess { batch { id quantity } } ... on Error { code } } }"""
CREATE_DOWNLOAD = """mutation($id: ID!, $password: String!) {
  createCardBatchDownload(batchId: $id, password: $password) {
  __typename ... on CardBatchDownload { url } ... on Error { code } } }"""
PREVIEW = """query($c: String!) { redemptionPreview(code: $c) { __typename
  ... on RedemptionPreview { productType osImages { id } } ... on Error { code } } }"""
REDEEM = """mutation($c: String!, $os: ID) { redeemCard(input: {code: $c, osImageId: $os}) { __typename
  ... on RedeemCardSuccess { order { id status } } ... on Error { code } } }"""


# ---------------------------------------------------------------- figures


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Operation:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rate_limited: int = 0
    examples: list[str] = field(default_factory=list)

    def row(self, name: str, seconds: float) -> str:
        ordered = sorted(self.latencies)
        return (
            f"  {name:<22}{len(ordered):>7}{len(ordered) / seconds:>8.1f}"
            f"{percentile(ordered, 0.5) * 1000:>9.1f}{percentile(ordered, 0.99) * 1000:>9.1f}"
            f"{self.errors:>8}{self.rate_limited:>14}"
        )


@dataclass
class Soak:
    graphql_url: str
    deadline: float
    image_id: str
    line_id: str
    admin_token: str
    members: list[tuple[str, str]]  # (token, client address)
    pool: deque[str]
    batches: list[tuple[str, int]]  # small batches, to download: (id, quantity)
    listed: list[tuple[str, int]]  # the batches of the last list: (id, quantity)
    operations: dict[str, Operation] = field(default_factory=dict)
    redeemed: int = 0
    pool_ran_dry: bool = False

    def op(self, name: str) -> Operation:
        return self.operations.setdefault(name, Operation())

    def failed(self, name: str, why: str) -> None:
        operation = self.op(name)
        operation.errors += 1
        if len(operation.examples) < 3:
            operation.examples.append(why[:300])


class Client:
    """One keep-alive connection; a new one after a transport failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = Connection(url)
        self.rate_limited = False

    async def call(
        self,
        soak: Soak,
        name: str,
        query: str,
        variables: dict[str, Any],
        headers: dict[str, str],
        expected: set[str],
        rate_limited_ok: bool = False,
    ) -> dict[str, Any] | None:
        """The answer's root field when it is one of `expected` (by __typename, or by `code` for
        error types); None otherwise, with the outcome counted under `name`: RATE_LIMITED apart
        when `rate_limited_ok` (then `self.rate_limited` is set), anything else as an error."""
        self.rate_limited = False
        started = time.perf_counter()
        try:
            status, body = await self.connection.post_json({"query": query, "variables": variables}, headers)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            soak.op(name).latencies.append(time.perf_counter() - started)
            soak.failed(name, f"transport: {type(exc).__name__}: {exc}")
            await self.connection.close()
            self.connection = Connection(self.url)
            return None
        soak.op(name).latencies.append(time.perf_counter() - started)
        if status != 200:
            soak.failed(name, f"HTTP {status}: {body[:200]!r}")
            return None
        document = orjson.loads(body)
        if document.get("errors") or not document.get("data"):
            soak.failed(name, f"GraphQL errors: {document.get('errors')}")
            return None
        [answer] = document["data"].values()
        if not isinstance(answer, dict):
            soak.failed(name, f"unexpected answer: {answer}")
            return None
        if answer.get("code") == "RATE_LIMITED" and rate_limited_ok:
            soak.op(name).rate_limited += 1
            self.rate_limited = True
            return None
        if answer.get("__typename") not in expected and answer.get("code") not in expected:
            soak.failed(name, f"unexpected answer: {answer}")
            return None
        return answer

    async def close(self) -> None:
        await self.connection.close()


# ---------------------------------------------------------------- the two kinds of client


async def member_client(soak: Soak) -> None:
    client = Client(soak.graphql_url)
    try:
        while time.perf_counter() < soak.deadline:
            token, address = random.choice(soak.members)
            headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
            if random.random() < BAD_CODE_SHARE:
                # a well-formed code that is no card: counted as a failed attempt
                query, variables = random.choice(
                    (
                        (PREVIEW, {"c": codes.generate()}),
                        (REDEEM, {"c": codes.generate(), "os": soak.image_id}),
                    )
                )
                await client.call(
                    soak, "member.bad_code", query, variables, headers, {"CARD_NOT_FOUND"}, True
                )
                continue
            if not soak.pool:
                soak.pool_ran_dry = True
                return
            code = soak.pool.popleft()
            preview = await client.call(
                soak, "member.preview", PREVIEW, {"c": code}, headers, {"RedemptionPreview"}, True
            )
            if preview is None:
                if client.rate_limited:
                    soak.pool.append(code)  # still unused: another member takes it
                continue
            redeemed = await client.call(
                soak,
                "member.redeem",
                REDEEM,
                {"c": code, "os": soak.image_id},
                headers,
                {"RedeemCardSuccess"},
                True,
            )
            if redeemed is not None:
                soak.redeemed += 1
            elif client.rate_limited:
                soak.pool.append(code)
    finally:
        await client.close()


async def admin_client(soak: Soak, http: httpx.AsyncClient) -> None:
    client = Client(soak.graphql_url)
    headers = {"Authorization": f"Bearer {soak.admin_token}"}
    actions = ["list", "list", "cards", "cards", "download", "create"]
    try:
        while time.perf_counter() < soak.deadline:
            action = random.choice(actions)
            if action == "list":
                listed = await client.call(
                    soak, "admin.list_batches", LIST_BATCHES, {}, headers, {"CardBatchConnection"}
                )
                if listed is not None and listed["nodes"]:
                    soak.listed[:] = [(node["id"], node["quantity"]) for node in listed["nodes"]]
            elif action == "cards":
                batch_id, quantity = random.choice(soak.listed)
                offset = random.randrange(0, min(50, math.ceil(quantity / 20))) * 20
                await client.call(
                    soak,
                    "admin.cards_page",
                    CARDS_PAGE,
                    {"id": batch_id, "offset": offset},
                    headers,
                    {"CardBatch"},
                )
            elif action == "create":
                config = {
                    "productType": "CLOUD_SERVER",
                    "lineId": soak.line_id,
                    "months": 1,
                    "cpuCores": 1,
                    "memoryGb": 1,
                    "diskGb": 10,
                    "bandwidthMbps": 10,
                    "defenseGbps": 0,
                }
                wanted = {
                    "name": "soak",
                    "quantity": SMALL_BATCH,
                    "validUntil": "2099-12-31",
                    "config": config,
                }
                made = await client.call(
                    soak,
                    "admin.create_batch",
                    CREATE_BATCH,
                    {"input": wanted},
                    headers,
                    {"CreateCardBatchSuccess"},
                )
                if made is not None:
                    soak.batches.append((made["batch"]["id"], made["batch"]["quantity"]))
            else:
                await download(soak, client, http, headers)
            await asyncio.sleep(ADMIN_THINK_SECONDS * random.uniform(0.5, 1.5))
    finally:
        await client.close()


async def download(soak: Soak, client: Client, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    batch_id, quantity = random.choice(soak.batches)
    link = await client.call(
        soak,
        "admin.download_link",
        CREATE_DOWNLOAD,
        {"id": batch_id, "password": ADMIN_PASSWORD},
        headers,
        {"CardBatchDownload"},
    )
    if link is None:
        return
    started = time.perf_counter()
    try:
        response = await http.get(link["url"])
    except httpx.HTTPError as exc:
        soak.op("admin.download_get").latencies.append(time.perf_counter() - started)
        soak.failed("admin.download_get", f"transport: {type(exc).__name__}")
        return
    soak.op("admin.download_get").latencies.append(time.perf_counter() - started)
    lines = response.text.split()
    if response.status_code != 200 or len(lines) != quantity:
        soak.failed("admin.download_get", f"HTTP {response.status_code}, {len(lines)} codes of {quantity}")


# ---------------------------------------------------------------- set-up, server, memory


@dataclass
class Seeded:
    url: str
    admin_token: str
    members: list[tuple[str, str]]
    pool: list[str]
    batches: list[tuple[str, int]]
    line_id: str
    image_id: str


async def seed(backend: str, workdir: Path, pool_size: int, member_count: int) -> Seeded:
    """A fresh, migrated database with the example catalog (a wide address pool), an admin (real
    password cost: the download check is part of the load), MEMBER_COUNT members (cheap hashes:
    they never log in), a pool batch whose codes come through the download path, and small batches."""
    if backend == "postgres":
        await fresh_postgres()
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'soak.db'}"
    settings = load_settings(
        _env_file=None, data_dir=workdir, database_url=url, secret_key=SECRET, max_batch_quantity=pool_size
    )
    db = Database(url)
    try:
        await migrate(db.write_engine)
        rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
        cheap = dataclasses.replace(
            rt, settings=settings.model_copy(update={"password_time_cost": 1, "password_memory_kib": 64})
        )
        await load_catalog_text(db, CATALOG.read_text(encoding="utf-8").replace(*WIDE_POOL))
        admin = await create_user(rt, username="soak-admin", password=ADMIN_PASSWORD, role=Role.ADMIN)
        expires = rt.now().replace(year=rt.now().year + 1)
        members = []
        for index in range(member_count):
            member = await create_user(
                cheap, username=f"soak-member-{index}", password="soak member password", role=Role.MEMBER
            )
            address = f"10.{index // 250 % 250}.{index % 250}.{1 + index // 62500}"
            members.append((issue_token(rt.keys.token, TokenClaims(member.id, 1, expires)), address))
        line = await db_scalar(rt, "SELECT id FROM lines WHERE code = 'sh-bgp'")
        image = await db_scalar(rt, "SELECT id FROM os_images WHERE code = 'ubuntu-22.04'")
        caller = Caller(viewer=admin)
        batches = []
        pool: list[str] = []
        for quantity in (pool_size, *[SMALL_BATCH] * SEED_BATCHES):
            batch = await cloud_server_batch(rt, caller, line, quantity, name="soak")
            if quantity != pool_size:
                batches.append((str(batch.id), quantity))
                continue
            pool = await batch_codes(rt, caller, batch.id, ADMIN_PASSWORD)
        random.shuffle(pool)
        token = issue_token(rt.keys.token, TokenClaims(admin.id, 1, expires))
        return Seeded(url, token, members, pool, batches, str(line), str(image))
    finally:
        await db.dispose()


def start_serve(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`tihuo serve` as deployed on one machine; ready when /healthz answers."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tihuo.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tihuo serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("tihuo serve did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def sample_rss(
    pid: int, started: float, samples: list[tuple[float, float]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        samples.append((time.perf_counter() - started, rss_mb(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_SECONDS)


def window(samples: list[tuple[float, float]], start: float, end: float) -> tuple[float, float]:
    """The lowest and the median RSS sampled between `start` and `end` seconds."""
    inside = [rss for at, rss in samples if start <= at <= end]
    if not inside:
        return float("nan"), float("nan")
    return min(inside), statistics.median(inside)


async def final_counts(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        async with db.read() as session:
            count = select(func.count())
            return {
                "used": await session.scalar(count.select_from(Card).where(Card.status == CardStatus.USED))
                or 0,
                "orders": await session.scalar(count.select_from(Order)) or 0,
                "active": await session.scalar(
                    count.select_from(Order).where(Order.status == OrderStatus.ACTIVE)
                )
                or 0,
                "failed": await session.scalar(
                    count.select_from(Order).where(Order.status == OrderStatus.FAILED)
                )
                or 0,
                "redemptions": await session.scalar(count.select_from(Redemption)) or 0,
            }
    finally:
        await db.dispose()


async def drain(url: str) -> tuple[int, float | None]:
    """Orders ACTIVE when the load stopped, and how long the server's worker then took to finish
    the rest (None if not within DRAIN_SECONDS)."""
    started = time.perf_counter()
    first = await final_counts(url)
    counts = first
    while time.perf_counter() - started < DRAIN_SECONDS:
        if counts["active"] + counts["failed"] == counts["orders"]:
            return first["active"], time.perf_counter() - started
        await asyncio.sleep(0.5)
        counts = await final_counts(url)
    return first["active"], None


# ---------------------------------------------------------------- one back-end


async def run(
    backend: str, seconds: float, member_clients: int, admin_clients: int, member_count: int
) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # more than the members can redeem in the time, on either back-end
        seeded = await seed(
            backend, workdir, pool_size=int(max(2000, seconds * 250)), member_count=member_count
        )
        env = {
            "TIHUO_DATABASE_URL": seeded.url,
            "TIHUO_SECRET_KEY": SECRET,
            "TIHUO_DATA_DIR": str(workdir),
            "TIHUO_LOG_LEVEL": "WARNING",
            "TIHUO_SIMULATED_DELAY_MS": "20",
        }
        port = free_port()
        log_path = workdir / "serve.log"
        server = start_serve(env, port, log_path)
        try:
            await asyncio.sleep(1)
            rss_start = rss_mb(server.pid)
            pool = deque(seeded.pool)
            pool_size = len(pool)
            started = time.perf_counter()
            soak = Soak(
                graphql_url=f"http://127.0.0.1:{port}/graphql",
                deadline=started + seconds,
                image_id=seeded.image_id,
                line_id=seeded.line_id,
                admin_token=seeded.admin_token,
                members=seeded.members,
                pool=pool,
                batches=seeded.batches,
                listed=list(seeded.batches),
            )
            samples: list[tuple[float, float]] = []
            done = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(server.pid, started, samples, done))
            async with httpx.AsyncClient(timeout=60) as http:
                await asyncio.gather(
                    *(member_client(soak) for _ in range(member_clients)),
                    *(admin_client(soak, http) for _ in range(admin_clients)),
                )
            elapsed = time.perf_counter() - started
            done.set()
            await sampler
            await asyncio.sleep(1)
            rss_after = rss_mb(server.pid)
            active_at_end, drained_in = await drain(seeded.url)
            log_tail = log_path.read_text(errors="replace")[-2000:]
        finally:
            stop(server)
        totals = await final_counts(seeded.url)

    warm, warm_median = window(samples, 0.2 * seconds, 0.3 * seconds)
    end, end_median = window(samples, 0.9 * seconds, seconds + 1)
    peak = max(rss for _, rss in samples)
    growth = (end - warm) / warm
    passed = growth <= GROWTH_LIMIT

    print(
        f"\n[{backend}] tihuo serve, {elapsed:.1f} s, {member_clients} member clients "
        f"({member_count} members), {admin_clients} admin clients"
    )
    print(
        f"  {'operation':<22}{'count':>7}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'rate-limited':>14}"
    )
    total = Operation()
    for name in sorted(soak.operations):
        operation = soak.operations[name]
        print(operation.row(name, elapsed))
        total.latencies += operation.latencies
        total.errors += operation.errors
        total.rate_limited += operation.rate_limited
    print(total.row("all", elapsed))
    for name, operation in sorted(soak.operations.items()):
        for example in operation.examples:
            print(f"    {name} error: {example}")
    if soak.pool_ran_dry:
        print(f"  NOTE: all {pool_size} pool codes were used before the time was up")
    print(
        f"  server RSS: start {rss_start:.1f} MB; floor after warm-up {warm:.1f} MB, at the end "
        f"{end:.1f} MB (medians {warm_median:.1f} and {end_median:.1f} MB; peak {peak:.1f} MB; "
        f"idle after the load {rss_after:.1f} MB)"
    )
    tenths = [window(samples, i * seconds / 10, (i + 1) * seconds / 10)[0] for i in range(10)]
    print("  RSS floor by tenth of the time (MB): " + " ".join(f"{mb:.0f}" for mb in tenths))
    print(f"  growth after warm-up: {growth * 100:+.1f}% -> {'PASS' if passed else 'FAIL'} (limit +10%)")
    consistent = totals["used"] == totals["orders"] == totals["redemptions"] == soak.redeemed
    print(
        f"  afterwards: cards used {totals['used']}, orders {totals['orders']}, redemption rows "
        f"{totals['redemptions']}, successes {soak.redeemed} -> {'consistent' if consistent else 'INCONSISTENT'}"
    )
    waiting = totals["orders"] - totals["active"] - totals["failed"]
    print(
        f"  provisioning (in-process worker): {active_at_end} of {totals['orders']} orders ACTIVE when "
        "the load stopped; "
        + (
            f"the rest done {drained_in:.1f} s later"
            if drained_in is not None
            else f"{waiting} still waiting after {DRAIN_SECONDS} s (a backlog, not an error)"
        )
        + f"; ACTIVE {totals['active']}, FAILED {totals['failed']}"
    )
    errors = sum(operation.errors for operation in soak.operations.values())
    healthy = consistent and totals["failed"] == 0 and errors == 0
    if not healthy:
        print(f"  server log (tail):\n{log_tail}")
    return passed and healthy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--member-clients", type=int, default=8)
    parser.add_argument("--admin-clients", type=int, default=2)
    parser.add_argument("--members", type=int, default=600)
    args = parser.parse_args()
    print(f"soak benchmark on {os.cpu_count()} cores, host {socket.gethostname()}")
    results = []
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        results.append(
            asyncio.run(run(backend, args.seconds, args.member_clients, args.admin_clients, args.members))
        )
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
