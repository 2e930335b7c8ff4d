"""Card batch benchmarks (issue: card batches). Prints its figures; not a test.

    python bench/cards.py [--backend sqlite|postgres|both] [--quantity 100000] [--big 1000000]

For each back-end, on a fresh database:
  1. a QUANTITY-card batch made through the createCardBatch mutation (in-process ASGI), with the
     process's peak memory growth (ru_maxrss);
  2. the floor: the same rows (same code generation, hash, encryption) inserted by the plainest
     script: sqlite3 executemany in one transaction, or asyncpg copy_records_to_table;
  3. the first page and page 5,000 (20 a page) of a BIG-card batch's cards with totalCount,
     through GraphQL in-process (median of 20 runs each);
  4. streaming the TXT of the QUANTITY-card batch.
PostgreSQL: TIHUO_BENCH_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/tihuo_bench,
created when missing; its public schema is dropped and re-created).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import Database
from core.keys import Keys
from core.security import TokenClaims, issue_token
from core.settings import load_settings
from models import Role
from services import codes
from services.accounts import create_user
from services.catalog_loading import load_catalog_text
from services.runtime import Runtime
from tihuo.app import create_app
from tihuo.migrate import migrate

CATALOG = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "catalog.toml"
PG_URL = os.environ.get(
    "TIHUO_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/tihuo_bench"
)
SECRET = "bench-secret-0123456789abcdef0123"

CREATE = """
mutation($input: CreateCardBatchInput!) { createCardBatch(input: $input) {
  __typename ... on CreateCardBatchSuccess { batch { id quantity } } ... on Error { code message } } }
"""
PAGE = """
query($id: ID!, $offset: Int) { cardBatch(id: $id) { cards(first: 20, offset: $offset) {
  totalCount nodes { id maskedCode status expired usedAt remark } pageInfo { hasNextPage endCursor } } } }
"""
DOWNLOAD = """
mutation($id: ID!, $password: String!) { createCardBatchDownload(batchId: $id, password: $password) {
  ... on CardBatchDownload { url } ... on Error { code } } }
"""


def reset_peak_memory() -> None:
    """Linux: make VmHWM (the peak resident size) start again from the current size."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def peak_growth_mb(before: float) -> float:
    return memory_mb("VmHWM") - before


async def fresh_postgres() -> None:
    plain = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    server, _, name = plain.rpartition("/")
    connection = await asyncpg.connect(f"{server}/postgres")
    if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    engine = create_async_engine(PG_URL)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


async def setup(backend: str, workdir: Path, max_quantity: int) -> tuple[Runtime, str, str]:
    if backend == "postgres":
        await fresh_postgres()
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    settings = load_settings(
        _env_file=None, data_dir=workdir, database_url=url, secret_key=SECRET, max_batch_quantity=max_quantity
    )
    db = Database(url)
    await migrate(db.write_engine)
    rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
    await load_catalog_text(db, CATALOG.read_text(encoding="utf-8"))
    password = "bench password 1"
    admin = await create_user(rt, username="bench", password=password, role=Role.ADMIN)
    token = issue_token(rt.keys.token, TokenClaims(admin.id, 1, rt.now().replace(year=rt.now().year + 1)))
    return rt, token, password


async def gql(http: httpx.AsyncClient, token: str, query: str, variables: dict) -> dict:
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def make_batch(http: httpx.AsyncClient, token: str, line_id: str, quantity: int) -> str:
    config = {
        "productType": "CLOUD_SERVER",
        "lineId": line_id,
        "months": 1,
        "cpuCores": 1,
        "memoryGb": 1,
        "diskGb": 10,
        "bandwidthMbps": 10,
        "defenseGbps": 0,
    }
    data = await gql(
        http,
        token,
        CREATE,
        {"input": {"name": "bench", "quantity": quantity, "validUntil": "2099-12-31", "config": config}},
    )
    result = data["createCardBatch"]
    assert result["__typename"] == "CreateCardBatchSuccess", result
    return result["batch"]["id"]


def sealed_rows(rt: Runtime, batch_id: int, quantity: int) -> list[tuple]:
    sealer = codes.CodeSealer(rt.keys)
    rows = []
    for seq in range(1, quantity + 1):
        sealed = sealer.seal(codes.generate())
        rows.append(
            (batch_id, seq, sealed.code_hash, sealed.code_cipher, sealed.key_version, sealed.last4, "UNUSED")
        )
    return rows


COLUMNS = ("batch_id", "seq", "code_hash", "code_cipher", "key_version", "last4", "status")


async def floor(backend: str, rt: Runtime, batch_id: int, quantity: int) -> float:
    """The same rows, the plainest way the driver allows; generation and sealing included."""
    if backend == "postgres":
        connection = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        started = time.perf_counter()
        rows = sealed_rows(rt, batch_id, quantity)
        async with connection.transaction():
            await connection.copy_records_to_table("cards", records=rows, columns=COLUMNS)
        elapsed = time.perf_counter() - started
        await connection.close()
        return elapsed
    path = rt.settings.resolved_database_url.removeprefix("sqlite+aiosqlite:///")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={rt.settings.sqlite_synchronous}")
    started = time.perf_counter()
    rows = sealed_rows(rt, batch_id, quantity)
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(f"INSERT INTO cards ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)  # noqa: S608
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


async def run(backend: str, quantity: int, big: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rt, token, password = await setup(backend, Path(tmp), max(quantity, big))
        app = create_app(runtime=rt)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600
        ) as http:
            regions = await gql(http, token, "{ regions { lines { id code } } }", {})
            line_id = next(
                line["id"] for r in regions["regions"] for line in r["lines"] if line["code"] == "sh-bgp"
            )
            await make_batch(http, token, line_id, 10)  # warm up: imports, caches, first connections

            reset_peak_memory()
            rss_before = memory_mb("VmRSS")
            started = time.perf_counter()
            batch_id = await make_batch(http, token, line_id, quantity)
            mutation_s = time.perf_counter() - started
            rss_growth = peak_growth_mb(rss_before)

            # the floor needs an empty batch row to hang its cards on: one more 1-card batch, its card removed
            floor_batch = int(await make_batch(http, token, line_id, 1))
            async with rt.db.write() as session:
                await session.execute(text("DELETE FROM cards WHERE batch_id = :b"), {"b": floor_batch})
            floor_s = await floor(backend, rt, floor_batch, quantity)

            big_id = await make_batch(http, token, line_id, big) if big else None
            pages = {}
            if big_id:
                for label, offset in (("first page", None), ("page 5,000", 4999 * 20)):
                    times = []
                    for _ in range(20):
                        started = time.perf_counter()
                        data = await gql(http, token, PAGE, {"id": big_id, "offset": offset})
                        times.append(time.perf_counter() - started)
                        assert data["cardBatch"]["cards"]["totalCount"] == big
                        assert len(data["cardBatch"]["cards"]["nodes"]) == 20
                    pages[label] = statistics.median(times) * 1000

            url = (await gql(http, token, DOWNLOAD, {"id": batch_id, "password": password}))[
                "createCardBatchDownload"
            ]["url"]
            reset_peak_memory()
            rss_before_txt = memory_mb("VmRSS")
            started = time.perf_counter()
            lines = 0
            async with http.stream("GET", url) as response:
                async for chunk in response.aiter_bytes():
                    lines += chunk.count(b"\n")
            txt_s = time.perf_counter() - started
            assert lines == quantity, lines
            txt_growth = peak_growth_mb(rss_before_txt)
        await rt.db.dispose()

    print(f"\n[{backend}]")
    print(
        f"  createCardBatch {quantity:,} cards via GraphQL: {mutation_s:.2f} s  (peak RSS growth {rss_growth:.0f} MB)"
    )
    print(
        f"  floor (same rows, {'asyncpg COPY' if backend == 'postgres' else 'sqlite3 executemany'}): {floor_s:.2f} s"
    )
    print(f"  ratio mutation / floor: {mutation_s / floor_s:.2f}")
    for label, ms in pages.items():
        print(f"  cards {label} of a {big:,}-card batch with totalCount: median {ms:.1f} ms")
    print(f"  TXT of {quantity:,} cards streamed: {txt_s:.2f} s  (peak RSS growth {txt_growth:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--quantity", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"cards benchmark on {os.cpu_count()} cores, {date.today()}")
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        asyncio.run(run(backend, args.quantity, args.big))


if __name__ == "__main__":
    main()
