"""Redemption benchmark (issue: redemption). Prints its figures; not a test.

    python bench/redeem.py [--backend sqlite|postgres|both] [--seconds 20] [--clients 16]
                           [--per-member-limit N]

Per back-end, on a fresh database, against one uvicorn process on loopback (an API process as
deployed: `uvicorn --factory tihuo.app:create_app`, no worker in it):
  1. redemptionPreview of unused cards: throughput, p50, p99, errors;
  2. redeemCard of fresh unique cards by CLIENTS members at once: throughput, p50, p99, errors,
     then a check that cards used = orders = redemption rows = successes;
  3. the floor: a bare Strawberry mutation doing one conditional UPDATE + one INSERT on the same
     database (bench/floor_app.py), same clients, once through SQLAlchemy and once through the
     drivers (as a redemption goes); and the ratio redeem / floor for each.
With --per-member-limit N, step 2 runs on two batches alike but that the second has perMemberLimit N,
taking turns (8 turns of a quarter of --seconds), and the ratio of the two throughputs is printed (RULES-v2 §5: the
limit is decided inside the write, and must not cost more than a tenth). Each client then signs
in as several members in turn, enough that none reaches the limit, in both runs alike.
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
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cards import PG_URL, SECRET, fresh_postgres  # noqa: E402
from bench.floor_app import prepare as prepare_floor  # noqa: E402
from bench.loadgen import Connection  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Keys  # noqa: E402
from core.security import TokenClaims, issue_token  # noqa: E402
from core.settings import load_settings  # noqa: E402
from models import Card, CardBatch, CardStatus, Order, ProductType, Redemption, Role  # noqa: E402
from services import cards as card_service  # noqa: E402
from services import downloads  # noqa: E402
from services.accounts import create_user  # noqa: E402
from services.catalog_loading import load_catalog_text  # noqa: E402
from services.pricing import ConfigInput  # noqa: E402
from services.runtime import Caller, Runtime  # noqa: E402
from tihuo.migrate import migrate  # noqa: E402

CATALOG = ROOT / "tests" / "fixtures" / "catalog.toml"
PREVIEW = "query($c: String!){ redemptionPreview(code: $c) { __typename } }"
REDEEM = (
    "mutation($c: String!, $os: ID){ redeemCard(input: {code: $c, osImageId: $os}) "
    "{ __typename ... on RedeemCardSuccess { order { id status } } ... on Error { code } } }"
)
FLOOR = "mutation($c: String!){ redeem(code: $c) }"


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    successes: int = 0
    elapsed: float = 0.0

    def report(self, label: str) -> str:
        done = len(self.latencies)
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000 if ordered else float("nan")
        p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else float("nan")
        return (
            f"  {label}: {done / self.elapsed:.0f}/s over {self.elapsed:.1f} s ({done} requests), "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {self.errors}"
        )

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed

    def add(self, other: Run) -> None:
        self.latencies.extend(other.latencies)
        self.errors += other.errors
        self.successes += other.successes
        self.elapsed += other.elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(factory: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{factory} did not start")


async def drive(
    url: str, query: str, work: list[dict[str, object]], tokens: list[Any], seconds: float, ok: str
) -> Run:
    """`len(tokens)` clients, each on its own keep-alive connection with its own token (or taking
    turns with its own list of tokens), taking variables from `work` until time is up."""
    run = Run()
    queue = iter(work)
    deadline = time.perf_counter() + seconds
    marker = ok.encode()

    async def client(token: str | list[str]) -> None:
        connection = Connection(url)
        turns = [token] if isinstance(token, str) else token
        all_headers = [{"Authorization": f"Bearer {each}"} for each in turns]
        turn = 0
        try:
            while time.perf_counter() < deadline:
                variables = next(queue, None)
                if variables is None:
                    return
                headers = all_headers[turn % len(all_headers)]
                turn += 1
                started = time.perf_counter()
                try:
                    status, body = await connection.post_json(
                        {"query": query, "variables": variables}, headers
                    )
                    good = status == 200 and marker in body and b'"errors"' not in body
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    good = False
                    await connection.close()
                    connection = Connection(url)
                run.latencies.append(time.perf_counter() - started)
                if good:
                    run.successes += 1
                else:
                    run.errors += 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(token) for token in tokens))
    run.elapsed = time.perf_counter() - started
    return run


async def setup(
    backend: str, workdir: Path, cards: int, clients: int, members: int | None = None
) -> tuple[Runtime, list[str], list[str], str]:
    if backend == "postgres":
        await fresh_postgres()
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    settings = load_settings(
        _env_file=None,
        data_dir=workdir,
        database_url=url,
        secret_key=SECRET,
        max_batch_quantity=max(cards, 1),
    )
    db = Database(url)
    await migrate(db.write_engine)
    rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
    await load_catalog_text(db, CATALOG.read_text(encoding="utf-8"))
    admin = await create_user(rt, username="bench-admin", password="bench password 1", role=Role.ADMIN)
    expires = rt.now().replace(year=rt.now().year + 1)
    tokens = []
    for index in range(members or clients):
        member = await create_user(
            rt, username=f"bench-member-{index}", password="bench password 1", role=Role.MEMBER
        )
        tokens.append(issue_token(rt.keys.token, TokenClaims(member.id, 1, expires)))
    caller = Caller(viewer=admin)
    line = await db_scalar(rt, "SELECT id FROM lines WHERE code = 'sh-bgp'")
    image = await db_scalar(rt, "SELECT id FROM os_images WHERE code = 'centos-7.9'")
    batch = await cloud_server_batch(rt, caller, line, cards, name="bench")
    codes = await batch_codes(rt, caller, batch.id, "bench password 1")
    return rt, codes, tokens, str(image)


def smallest_cloud_server(line: object) -> ConfigInput:
    """The cheapest cloud server on a line of tests/fixtures/catalog.toml (sh-bgp)."""
    return ConfigInput(
        product_type=ProductType.CLOUD_SERVER,
        line_id=str(line),
        months=1,
        cpu_cores=1,
        memory_gb=1,
        disk_gb=10,
        bandwidth_mbps=10,
        defense_gbps=0,
    )


async def cloud_server_batch(
    rt: Runtime,
    caller: Caller,
    line: object,
    quantity: int,
    *,
    name: str,
    per_member_limit: int | None = None,
) -> CardBatch:
    return await card_service.create_batch(
        rt,
        caller,
        card_service.NewBatch(
            name=name,
            batch_no=None,
            config=smallest_cloud_server(line),
            quantity=quantity,
            valid_until=date(2099, 12, 31),
            per_member_limit=per_member_limit,
        ),
    )


async def batch_codes(rt: Runtime, caller: Caller, batch_id: int, password: str) -> list[str]:
    """The batch's codes, through a download link as an admin would fetch them."""
    link = await downloads.create_download(rt, caller, str(batch_id), password)
    claimed = await downloads.claim_download(rt, link.token, None)
    assert claimed is not None
    return b"".join([chunk async for chunk in downloads.stream_codes(rt, claimed)]).decode().split()


async def admin_viewer(rt: Runtime) -> Any:
    from services.runtime import Viewer

    found = await db_scalar(rt, "SELECT id FROM users WHERE username = 'bench-admin'")
    return Viewer(id=int(found), username="bench-admin", role=Role.ADMIN)  # type: ignore[arg-type]


async def db_scalar(rt: Runtime, sql: str) -> object:
    from sqlalchemy import text

    async with rt.db.read() as session:
        return await session.scalar(text(sql))


async def run(backend: str, seconds: float, clients: int, limit: int | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cards = 40_000 if backend == "postgres" else 30_000
        # with a limit: enough members that none reaches it (each client takes turns among its own)
        members = clients * (-(-cards // (clients * limit)) + 1) if limit else clients
        rt, codes, tokens, image = await setup(backend, workdir, cards, clients, members)
        turns: list[Any] = [tokens[i::clients] for i in range(clients)] if limit else tokens
        limited_codes: list[str] = []
        if limit:
            admin = Caller(viewer=await admin_viewer(rt))
            line = await db_scalar(rt, "SELECT id FROM lines WHERE code = 'sh-bgp'")
            limited = await cloud_server_batch(rt, admin, line, cards, name="limited", per_member_limit=limit)
            limited_codes = await batch_codes(rt, admin, limited.id, "bench password 1")
        env = {
            "TIHUO_DATABASE_URL": rt.settings.resolved_database_url,
            "TIHUO_SECRET_KEY": SECRET,
            "TIHUO_DATA_DIR": str(workdir),
            "TIHUO_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        server = start_server("tihuo.app:create_app", env, port)
        url = f"http://127.0.0.1:{port}/graphql"
        try:
            preview_codes = codes[-5000:]
            preview_work = [{"c": preview_codes[i % len(preview_codes)]} for i in range(200_000)]
            await drive(url, PREVIEW, preview_work[:500], tokens, 3, "RedemptionPreview")  # warm-up
            preview = await drive(url, PREVIEW, preview_work, tokens, seconds, "RedemptionPreview")
            redeem_work = [{"c": code, "os": image} for code in codes[: len(codes) - 5000]]
            limited_run = None
            if not limit:
                redeem = await drive(url, REDEEM, redeem_work, turns, seconds, "RedeemCardSuccess")
            else:
                # the two batches take turns, a quarter of the time each turn, so that whatever
                # else the machine runs weighs on both alike
                limited_work = [{"c": code, "os": image} for code in limited_codes]
                redeem, limited_run = Run(), Run()
                for turn in range(8):
                    work, into = (redeem_work, redeem) if turn % 2 == 0 else (limited_work, limited_run)
                    part = await drive(url, REDEEM, work, turns, seconds / 4, "RedeemCardSuccess")
                    del work[: len(part.latencies)]
                    into.add(part)
        finally:
            server.terminate()
            server.wait(10)
        async with rt.db.read() as session:
            used = await session.scalar(
                select(func.count()).select_from(Card).where(Card.status == CardStatus.USED)
            )
            orders = await session.scalar(select(func.count()).select_from(Order))
            redemptions = await session.scalar(select(func.count()).select_from(Redemption))

        floors = {}
        for path, flag in (("SQLAlchemy", "0"), ("driver", "1")):
            floor_codes = [f"floor-{i}" for i in range(60_000)]
            await prepare_floor(rt.db, floor_codes)
            port = free_port()
            server = start_server("bench.floor_app:create_app", {**env, "FLOOR_DRIVER": flag}, port)
            try:
                floors[path] = await drive(
                    f"http://127.0.0.1:{port}/graphql",
                    FLOOR,
                    [{"c": c} for c in floor_codes],
                    tokens,
                    seconds,
                    '"redeem":true',
                )
            finally:
                server.terminate()
                server.wait(10)
        await rt.db.dispose()

    print(f"\n[{backend}] one uvicorn process, {clients} clients")
    print(preview.report("redemptionPreview"))
    print(redeem.report("redeemCard"))
    if limited_run is not None:
        print(limited_run.report(f"redeemCard, perMemberLimit {limit}"))
        print(
            f"  ratio with perMemberLimit / without: {limited_run.throughput / redeem.throughput:.2f}"
            " (target >= 0.9)"
        )
    for path, floor in floors.items():
        print(floor.report(f"floor (UPDATE + INSERT mutation, through {path})"))
    print(
        "  ratio redeem / floor: "
        + ", ".join(f"{redeem.throughput / floor.throughput:.2f} ({path})" for path, floor in floors.items())
    )
    successes = redeem.successes + (limited_run.successes if limited_run is not None else 0)
    consistent = used == orders == redemptions == successes
    print(
        f"  afterwards: cards used {used}, orders {orders}, redemption rows {redemptions}, "
        f"successes {successes} -> {'consistent' if consistent else 'INCONSISTENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--per-member-limit", type=int, default=None, help="also redeem a batch with this limit"
    )
    args = parser.parse_args()
    print(f"redemption benchmark on {os.cpu_count()} cores")
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args.seconds, args.clients, args.per_member_limit))


if __name__ == "__main__":
    main()
