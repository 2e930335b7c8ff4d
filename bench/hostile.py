"""What signed-out clients can do to everyone else (issue 9's figures), against one uvicorn process on
SQLite:

- a member's latency for `{ me { id } }` alone, then while 4 signed-out clients send the most
  expensive document the server accepts in a loop (a full GraphiQL introspection with descriptions,
  padded with aliases up to the cost limit) — target: p99 <= 100 ms;
- how long the refused fan-out query (cards -> batch -> cards -> batch -> cards, 100 each) takes to
  be answered;
- the server's resident memory before and after 60 distinct documents of the largest accepted size.

usage: .venv/bin/python bench/hostile.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from graphql import get_introspection_query

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cards import SECRET  # noqa: E402
from bench.loadgen import Connection  # noqa: E402
from bench.redeem import free_port, start_server  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Keys  # noqa: E402
from core.security import TokenClaims, issue_token  # noqa: E402
from core.settings import load_settings  # noqa: E402
from models import Role  # noqa: E402
from services.accounts import create_user  # noqa: E402
from services.runtime import Runtime  # noqa: E402
from tihuo.migrate import migrate  # noqa: E402

ME = "query { me { id } }"
INTROSPECTION = get_introspection_query(descriptions=True, input_value_deprecation=True)
FAN_OUT = """query { cardBatch(id: "1") { cards(first: 100) { nodes { batch { cards(first: 100) {
  nodes { batch { cards(first: 100) { nodes { id } } } } } } } } } }"""
BODY_LIMIT = 256 * 1024


def most_expensive() -> str:
    """The introspection with as many aliased `__type` look-ups beside it as the cost limit allows
    (data fields may not share an operation with introspection)."""
    extra = " ".join(f't{n}: __type(name: "Card") {{ ...FullType }}' for n in range(1))
    return INTROSPECTION.replace("__schema {", f"{extra} __schema {{", 1)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def member_latencies(url: str, token: str, seconds: float) -> list[float]:
    connection = Connection(url)
    samples = []
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, body = await connection.post_json({"query": ME}, {"Authorization": f"Bearer {token}"})
            assert status == 200 and b'"me":{"id"' in body, body[:200]
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    finally:
        await connection.close()
    return samples


async def hostile(url: str, document: str, stop: asyncio.Event, sent: list[int]) -> None:
    connection = Connection(url)
    try:
        while not stop.is_set():
            status, body = await connection.post_json({"query": document}, {})
            assert status == 200 and b'"errors"' not in body, body[:300]
            sent.append(len(body))
    finally:
        await connection.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def flood(url: str, count: int) -> None:
    """`count` distinct valid documents, each as large as the body limit lets it be."""
    connection = Connection(url)
    try:
        for n in range(count):
            padding = "#" + "x" * (BODY_LIMIT - 200) + "\n"
            document = f"query Flood{n} {{ __typename }}\n{padding}"
            status, body = await connection.post_json({"query": document}, {})
            assert status == 200 and b'"__typename":"Query"' in body, (status, body[:200])
    finally:
        await connection.close()


def report(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"  {label}: {len(ms)} requests, p50 {statistics.median(ms):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )


async def run(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        settings = load_settings(_env_file=None, data_dir=workdir, database_url=url, secret_key=SECRET)
        db = Database(url)
        await migrate(db.write_engine)
        rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
        member = await create_user(rt, username="bench-member", password="bench password 1", role=Role.MEMBER)
        token = issue_token(rt.keys.token, TokenClaims(member.id, 1, rt.now() + timedelta(days=1)))
        await db.dispose()
        env = {
            "TIHUO_DATABASE_URL": url,
            "TIHUO_SECRET_KEY": SECRET,
            "TIHUO_DATA_DIR": str(workdir),
            "TIHUO_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        server = start_server("tihuo.app:create_app", env, port)
        endpoint = f"http://127.0.0.1:{port}/graphql"
        try:
            await member_latencies(endpoint, token, 2)  # warm-up
            alone = await member_latencies(endpoint, token, seconds)

            document = most_expensive()
            stop = asyncio.Event()
            sent: list[int] = []
            attackers = [asyncio.create_task(hostile(endpoint, document, stop, sent)) for _ in range(4)]
            await asyncio.sleep(1)
            under_load = await member_latencies(endpoint, token, seconds)
            stop.set()
            await asyncio.gather(*attackers)

            connection = Connection(endpoint)
            refused_times = []
            for _ in range(20):
                started = time.perf_counter()
                _status, body = await connection.post_json(
                    {"query": FAN_OUT}, {"Authorization": f"Bearer {token}"}
                )
                refused_times.append(time.perf_counter() - started)
                assert json.loads(body)["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX", body
            await connection.close()

            before = rss_mib(server.pid)
            await flood(endpoint, 60)
            after = rss_mib(server.pid)
            await asyncio.sleep(2)
            settled = rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(10)

    print("one uvicorn process on SQLite")
    print(report("member { me { id } } alone", alone))
    print(report("member { me { id } } with 4 signed-out clients looping", under_load))
    print(
        f"  the signed-out clients: {len(sent)} documents answered in {seconds:.0f} s, "
        f"{statistics.mean(sent) / 1024:.0f} KiB each"
    )
    print(report("refused fan-out query (QUERY_TOO_COMPLEX)", refused_times))
    print(
        f"  RSS before 60 distinct {BODY_LIMIT // 1024} KiB documents {before:.0f} MiB, "
        f"after {after:.0f} MiB, 2 s later {settled:.0f} MiB (growth {after - before:+.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.seconds))


if __name__ == "__main__":
    main()
