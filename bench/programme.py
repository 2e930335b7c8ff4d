"""Card programme benchmark (RULES-v2 §5, issue 14's targets). Prints its figures; not a test.

    python bench/programme.py [--backend sqlite|postgres|both] [--big 1000000] [--batches 100]

Per back-end, on a fresh database (PostgreSQL: TIHUO_BENCH_POSTGRES_URL, reset):
  1. setCardRangeStatus (all DISABLED, then all UNUSED) and assignCardsToChannel over a whole
     100,000-card batch, through the services (target ≤ 2 s each);
  2. a CSV of those 100,000 cards, streamed and hashed as a download is (target ≤ 2 s);
  3. every figure of a --big-card batch (unusedCount, expiredCount, redeemedValue,
     outstandingValue, redemptionsByDay over 366 days, channels) and cardProgrammeStats over
     --batches batches (every figure, 366-day ranges), as GraphQL queries through the app
     in-process: median of 21 (target ≤ 50 ms). The day counts are seeded with a year of
     redemptions per batch, so the day queries have rows to read;
  4. SQLite only: a PDF sheet of 10,000 cards from a uvicorn process: its time, size, pages and
     the server's memory growth, read from /proc while it streams (target ≤ 100 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cards import PG_URL, SECRET, fresh_postgres  # noqa: E402
from bench.redeem import cloud_server_batch, db_scalar, free_port, start_server  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Keys  # noqa: E402
from core.security import TokenClaims, issue_token  # noqa: E402
from core.settings import load_settings  # noqa: E402
from models import (  # noqa: E402
    PROGRAMME_SHARDS,
    BatchRedemptionDay,
    CardBatch,
    CardExportFormat,
    CardStatus,
    ProgrammeRedemptionDay,
    Role,
)
from services import card_ranges, channels, downloads  # noqa: E402
from services.accounts import create_user  # noqa: E402
from services.catalog_loading import load_catalog_text  # noqa: E402
from services.runtime import Caller, Runtime  # noqa: E402
from tihuo.app import create_app  # noqa: E402
from tihuo.migrate import migrate  # noqa: E402

CATALOG = ROOT / "tests" / "fixtures" / "catalog.toml"
PASSWORD = "bench password 1"
FIGURES = """query ($id: ID!, $f: Date!, $t: Date!) { cardBatch(id: $id) { unusedCount expiredCount
  redeemedValue outstandingValue redemptionsByDay(from: $f, to: $t) { day count }
  channels { channel { name } cardCount usedCount } } }"""
STATS = """query ($f: Date!, $t: Date!) { cardProgrammeStats { activeBatches cardsIssued cardsUsed
  outstandingValue redeemedValue(from: $f, to: $t) redemptionsByDay(from: $f, to: $t) { day count } } }"""


def timed(label: str, started: float, target: float | None = None) -> float:
    took = time.perf_counter() - started
    goal = f" (target ≤ {target:g} s)" if target else ""
    print(f"  {label}: {took:.2f} s{goal}")
    return took


async def runtime(backend: str, workdir: Path, biggest: int) -> tuple[Runtime, Caller, str]:
    if backend == "postgres":
        await fresh_postgres()
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'programme.db'}"
    settings = load_settings(
        _env_file=None, data_dir=workdir, database_url=url, secret_key=SECRET, max_batch_quantity=biggest
    )
    db = Database(url)
    await migrate(db.write_engine)
    rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
    await load_catalog_text(db, CATALOG.read_text(encoding="utf-8"))
    admin = await create_user(rt, username="bench-admin", password=PASSWORD, role=Role.ADMIN)
    token = issue_token(rt.keys.token, TokenClaims(admin.id, 1, rt.now() + timedelta(days=1)))
    return rt, Caller(viewer=admin), token


async def range_writes(rt: Runtime, caller: Caller, batch_id: int, quantity: int) -> None:
    whole = card_ranges.CardRange(str(batch_id), 1, quantity)
    channel = await channels.create_channel(rt, caller, "bench reseller", None)
    started = time.perf_counter()
    changed, _ = await card_ranges.set_range_status(rt, caller, whole, CardStatus.DISABLED)
    timed(f"setCardRangeStatus DISABLED over {quantity:,} cards ({changed:,} changed)", started, 2)
    started = time.perf_counter()
    changed, _ = await card_ranges.set_range_status(rt, caller, whole, CardStatus.UNUSED)
    timed(f"setCardRangeStatus UNUSED over {quantity:,} cards ({changed:,} changed)", started, 2)
    started = time.perf_counter()
    done = await card_ranges.assign_range(rt, caller, whole, str(channel.id))
    timed(f"assignCardsToChannel over {quantity:,} cards ({done.assigned:,} assigned)", started, 2)


async def download(
    rt: Runtime, caller: Caller, batch_id: int, last: int, format: CardExportFormat
) -> tuple[int, float]:
    wanted = card_ranges.CardRange(str(batch_id), 1, last)
    link = await downloads.create_download(rt, caller, str(batch_id), PASSWORD, wanted=wanted, format=format)
    claimed = await downloads.claim_download(rt, link.token, None)
    assert claimed is not None
    started = time.perf_counter()
    size = 0
    async for chunk in downloads.stream(rt, claimed):
        size += len(chunk)
    return size, time.perf_counter() - started


async def seed_days(rt: Runtime, batch_ids: list[int], first: date) -> None:
    """A year of redemptions per batch, counted as a redemption counts them: the batch's day rows and
    the programme's (16 a day), with their value at the batches' price (83.66)."""
    rows = [
        {"batch_id": batch_id, "day": first + timedelta(days=n), "redeemed": 1 + (n * 7 + batch_id) % 5}
        for batch_id in batch_ids
        for n in range(366)
    ]
    programme: dict[tuple[date, int], int] = {}
    for row in rows:
        key = (row["day"], row["batch_id"] % PROGRAMME_SHARDS)
        programme[key] = programme.get(key, 0) + row["redeemed"]
    async with rt.db.write() as session:
        await session.execute(insert(BatchRedemptionDay), rows)
        await session.execute(
            insert(ProgrammeRedemptionDay),
            [
                {"day": day, "shard": shard, "redeemed": n, "redeemed_cents": n * 8366}
                for (day, shard), n in programme.items()
            ],
        )


async def median_ms(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, object]) -> float:
    times = []
    for _ in range(21):
        started = time.perf_counter()
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
        times.append(time.perf_counter() - started)
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
    return statistics.median(times) * 1000


async def figures(rt: Runtime, caller: Caller, token: str, big: int, batches: int) -> None:
    line = await db_scalar(rt, "SELECT id FROM lines WHERE code = 'sh-bgp'")
    started = time.perf_counter()
    biggest = await cloud_server_batch(rt, caller, line, big, name="big")
    timed(f"(setup: a {big:,}-card batch made)", started)
    for n in range(batches - 2):
        await cloud_server_batch(rt, caller, line, 10, name=f"small {n}")
    async with rt.db.read() as session:
        every = list((await session.scalars(select(CardBatch.id))).all())
    first = rt.today() - timedelta(days=365)
    await seed_days(rt, every, first)
    app = create_app(runtime=rt)
    count = await db_scalar(rt, "SELECT count(*) FROM card_batches")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for days in (366, 31):
            span = {"f": (rt.today() - timedelta(days=days - 1)).isoformat(), "t": rt.today().isoformat()}
            batch_ms = await median_ms(client, token, FIGURES, {"id": str(biggest.id), **span})
            stats_ms = await median_ms(client, token, STATS, span)
            print(
                f"  every figure of the {big:,}-card batch ({days} days by day): median {batch_ms:.1f} ms"
                " (target ≤ 50 ms)"
            )
            print(
                f"  cardProgrammeStats over {count} batches ({days} days by day): median {stats_ms:.1f} ms"
                " (target ≤ 50 ms)"
            )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def pdf_from_server(rt: Runtime, caller: Caller, workdir: Path, batch_id: int, cards: int) -> None:
    env = {
        "TIHUO_DATABASE_URL": rt.settings.resolved_database_url,
        "TIHUO_SECRET_KEY": SECRET,
        "TIHUO_DATA_DIR": str(workdir),
        "TIHUO_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    server = start_server("tihuo.app:create_app", env, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            await client.get("/healthz")
            wanted = card_ranges.CardRange(str(batch_id), 1, cards)
            link = await downloads.create_download(
                rt, caller, str(batch_id), PASSWORD, wanted=wanted, format=CardExportFormat.PDF
            )
            before = peak = rss_kib(server.pid)
            size = 0
            started = time.perf_counter()
            async with client.stream("GET", f"/downloads/{link.token}") as response:
                assert response.status_code == 200, response.status_code
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    peak = max(peak, rss_kib(server.pid))
            took = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"  PDF of {cards:,} cards from the server: {took:.1f} s, {size / 1e6:.1f} MB, {-(-cards // 10):,} pages; "
        f"server RSS {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB: growth {(peak - before) / 1024:.1f} MB "
        "(target ≤ 100 MB)"
    )


async def run(backend: str, big: int, batches: int) -> None:
    print(f"\n[{backend}]")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rt, caller, token = await runtime(backend, workdir, max(big, 100_000))
        line = await db_scalar(rt, "SELECT id FROM lines WHERE code = 'sh-bgp'")
        batch = await cloud_server_batch(rt, caller, line, 100_000, name="ranges")
        await range_writes(rt, caller, batch.id, 100_000)
        size, took = await download(rt, caller, batch.id, 100_000, CardExportFormat.CSV)
        print(f"  CSV of 100,000 cards: {took:.2f} s, {size / 1e6:.1f} MB (target ≤ 2 s)")
        if backend == "sqlite":
            await pdf_from_server(rt, caller, workdir, batch.id, 10_000)
        await figures(rt, caller, token, big, batches)
        await rt.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"card programme benchmark on {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args.big, args.batches))


if __name__ == "__main__":
    main()
