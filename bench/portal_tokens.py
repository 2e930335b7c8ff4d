"""What a portal token costs per request once its issuer's keys are held (issue 11's target: at most
1 ms more than a local token), against one uvicorn process on SQLite and the real OpenID provider of
the tests (tests/oidc: `npm ci` there first).

`{ me { id } }` is sent in turns with a local token and with a portal token (RS256, the provider's
default), on one keep-alive connection each, so the machine's other load weighs on both alike:

- with the default token cache (TIHUO_TOKEN_CACHE_SECONDS=5): what members see;
- with the cache off (0): every request verifies the JWT's signature and claims and reads the user,
  the worst case (a local token then costs its HMAC and the same read).

Then PortalTokens.verify alone, in this process, keys held: the signature check's own cost.

usage: .venv/bin/python bench/portal_tokens.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cards import SECRET  # noqa: E402
from bench.hostile import percentile  # noqa: E402
from bench.loadgen import Connection  # noqa: E402
from bench.redeem import free_port, start_server  # noqa: E402
from core.db import Database  # noqa: E402
from core.keys import Keys  # noqa: E402
from core.oidc import PortalTokens  # noqa: E402
from core.security import TokenClaims, issue_token  # noqa: E402
from core.settings import load_settings  # noqa: E402
from models import Role  # noqa: E402
from services.accounts import create_user  # noqa: E402
from services.runtime import Runtime  # noqa: E402
from tests.oidc_provider import AUDIENCE, running_provider  # noqa: E402
from tihuo.migrate import migrate  # noqa: E402

ME = {"query": "query { me { id } }"}


async def in_turns(endpoint: str, tokens: dict[str, str], requests: int) -> dict[str, list[float]]:
    connections = {label: Connection(endpoint) for label in tokens}
    samples: dict[str, list[float]] = {label: [] for label in tokens}
    try:
        for _ in range(requests):
            for label, token in tokens.items():
                started = time.perf_counter()
                status, body = await connections[label].post_json(ME, {"Authorization": f"Bearer {token}"})
                samples[label].append(time.perf_counter() - started)
                assert status == 200 and b'"me":{"id"' in body, body[:200]
    finally:
        for connection in connections.values():
            await connection.close()
    return samples


def figures(samples: list[float]) -> tuple[float, float]:
    ms = [s * 1000 for s in samples]
    return statistics.median(ms), percentile(ms, 0.99)


def report(title: str, samples: dict[str, list[float]]) -> None:
    local_p50, local_p99 = figures(samples["local"])
    portal_p50, portal_p99 = figures(samples["portal"])
    print(title)
    print(
        f"  local token : p50 {local_p50:.3f} ms, p99 {local_p99:.3f} ms ({len(samples['local'])} requests)"
    )
    print(
        f"  portal token: p50 {portal_p50:.3f} ms, p99 {portal_p99:.3f} ms ({len(samples['portal'])} requests)"
    )
    print(f"  portal - local: p50 {portal_p50 - local_p50:+.3f} ms, p99 {portal_p99 - local_p99:+.3f} ms")


async def verify_alone(issuer: str, token: str, count: int) -> float:
    tokens = PortalTokens(issuer, AUDIENCE)
    assert await tokens.verify(token) is not None  # fetches and keeps the keys
    started = time.perf_counter()
    for _ in range(count):
        await tokens.verify(token)
    elapsed = time.perf_counter() - started
    await tokens.aclose()
    return elapsed / count * 1e6


async def run(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_provider(Path(tmp) / "provider.log") as provider:
        workdir = Path(tmp)
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        settings = load_settings(_env_file=None, data_dir=workdir, database_url=url, secret_key=SECRET)
        db = Database(url)
        await migrate(db.write_engine)
        rt = Runtime(db=db, settings=settings, keys=Keys.from_secret(settings.secret))
        member = await create_user(rt, username="bench-member", password="bench password 1", role=Role.MEMBER)
        local = issue_token(rt.keys.token, TokenClaims(member.id, 1, rt.now() + timedelta(days=1)))
        await db.dispose()
        portal = await provider.token("bench-portal-member", phone_number="13800000000", name="测试")
        tokens = {"local": local, "portal": portal}
        print(f"bench/portal_tokens.py: {requests} requests per token and run, SQLite, RS256 portal token")
        for cache in ("5", "0"):
            env = {
                "TIHUO_DATABASE_URL": url,
                "TIHUO_SECRET_KEY": SECRET,
                "TIHUO_DATA_DIR": str(workdir),
                "TIHUO_LOG_LEVEL": "WARNING",
                "TIHUO_OIDC_ISSUER": provider.issuer,
                "TIHUO_OIDC_AUDIENCE": AUDIENCE,
                "TIHUO_TOKEN_CACHE_SECONDS": cache,
            }
            port = free_port()
            server = start_server("tihuo.app:create_app", env, port)
            try:
                endpoint = f"http://127.0.0.1:{port}/graphql"
                await in_turns(endpoint, tokens, 200)  # warm-up: keys fetched, member made, caches filled
                samples = await in_turns(endpoint, tokens, requests)
            finally:
                server.terminate()
                server.wait(timeout=10)
            report(f"token cache {cache} s (TIHUO_TOKEN_CACHE_SECONDS={cache}):", samples)
        per_call = await verify_alone(provider.issuer, portal, 2000)
        print(f"PortalTokens.verify alone, keys held: {per_call:.0f} µs per token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
