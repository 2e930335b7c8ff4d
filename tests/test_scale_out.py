"""Scale-out on PostgreSQL: two API processes (uvicorn, no worker) and two `tihuo worker` processes on
one database. Concurrent redemptions of the same cards through both APIs redeem each card once,
every provisioning job runs once, and the failed-attempt limit is one limit across the processes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from core.ids import parse_id
from core.settings import Settings
from models import (
    Card,
    CardStatus,
    Instance,
    JobStatus,
    Line,
    Order,
    OrderStatus,
    OsImage,
    ProductType,
    ProvisioningJob,
    Redemption,
    Role,
    SimulatedServer,
)
from services import cards as card_service
from services import codes, downloads
from services.pricing import ConfigInput
from services.runtime import Caller, Runtime
from tests.conftest import SignedInUser, make_user
from tests.processes import UVICORN, clean_env, free_port, healthy, spawn, stop

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("catalog")]

MEMBERS = 8
CARDS = 60
# every KEYED_EVERY-th card's keyed request is also sent again, same key, through the other API
KEYED_EVERY = 3

REDEEM = """
mutation ($input: RedeemCardInput!) {
  redeemCard(input: $input) {
    __typename
    ... on RedeemCardSuccess { order { id } }
    ... on RateLimitedError { code retryAfterSeconds }
    ... on Error { code }
  }
}
"""
PREVIEW = """
query ($code: String!) {
  redemptionPreview(code: $code) {
    __typename
    ... on RateLimitedError { code retryAfterSeconds }
    ... on Error { code }
  }
}
"""
CARD_USED = {"__typename": "CardUnavailableError", "code": "CARD_USED"}
CARD_NOT_FOUND = {"__typename": "CardCodeError", "code": "CARD_NOT_FOUND"}


# ---------------------------------------------------------------- the processes


@dataclass
class Deployment:
    """The running processes and where their logs go."""

    api_urls: list[str]
    processes: list[subprocess.Popen[bytes]]
    workers: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def log_tail(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in self.logs)


@pytest.fixture
async def deployment(settings: Settings, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Two API processes as the README deploys them, and two workers; all stopped afterwards."""
    env = clean_env(
        TIHUO_DATABASE_URL=settings.resolved_database_url,
        TIHUO_SECRET_KEY=settings.secret_key,
        TIHUO_DATA_DIR=str(tmp_path / "process-data"),
        TIHUO_LOG_LEVEL="WARNING",
        TIHUO_SIMULATED_DELAY_MS="20",
        TIHUO_WORKER_POLL_SECONDS="0.1",
        # the README's deployment behind a proxy: uvicorn applies no forwarded header itself
        # (--no-proxy-headers), the app believes the loopback proxy's
        TIHUO_FORWARDED_ALLOW_IPS="127.0.0.1",
    )
    ports = [free_port(), free_port()]
    api_logs = [tmp_path / f"api-{index}.log" for index in range(2)]
    worker_logs = [tmp_path / f"worker-{index}.log" for index in range(2)]
    apis = [
        spawn([sys.executable, *UVICORN, "--port", str(port), "--log-level", "warning"], env, log)
        for port, log in zip(ports, api_logs, strict=True)
    ]
    workers = [spawn([sys.executable, "-m", "tihuo.cli", "worker"], env, log) for log in worker_logs]
    running = Deployment(
        api_urls=[f"http://127.0.0.1:{port}" for port in ports],
        processes=apis + workers,
        workers=workers,
        logs=api_logs + worker_logs,
    )
    try:
        await asyncio.gather(*(healthy(url, api) for url, api in zip(running.api_urls, apis, strict=True)))
        yield running
    finally:
        stop(running.processes)


@pytest.fixture
async def apis(deployment: Deployment) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One HTTP client per API process."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    clients = [httpx.AsyncClient(base_url=url, timeout=30, limits=limits) for url in deployment.api_urls]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def post(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    user: SignedInUser,
    client_address: str | None = None,
) -> dict[str, Any]:
    """The answer's one root field. `client_address` is sent as X-Forwarded-For, which the app takes
    from its trusted loopback proxy: the limit then counts the member alone, not one shared address."""
    headers = dict(user.headers)
    if client_address is not None:
        headers["X-Forwarded-For"] = client_address
    response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    [answer] = body["data"].values()
    return answer


# ---------------------------------------------------------------- seeding, in-process


async def seed_cards(
    rt: Runtime, admin: SignedInUser, apis: list[httpx.AsyncClient]
) -> tuple[list[str], str]:
    """A batch of CARDS + 1 sh-bgp cloud-server cards, its codes fetched through API 0's download
    route (the single-use link then fails on API 1); and the id of an image to redeem them with."""
    async with rt.db.read() as session:
        line = await session.scalar(select(Line.id).where(Line.code == "sh-bgp"))
        image = await session.scalar(select(OsImage.id).where(OsImage.code == "ubuntu-22.04"))
    config = ConfigInput(
        product_type=ProductType.CLOUD_SERVER,
        line_id=str(line),
        months=1,
        cpu_cores=1,
        memory_gb=1,
        disk_gb=10,
        bandwidth_mbps=10,
        defense_gbps=0,
    )
    caller = Caller(viewer=admin.viewer)
    batch = await card_service.create_batch(
        rt,
        caller,
        card_service.NewBatch(
            name="scale-out", batch_no=None, config=config, quantity=CARDS + 1, valid_until=date(2099, 12, 31)
        ),
    )
    link = await downloads.create_download(rt, caller, str(batch.id), admin.password)
    response = await apis[0].get(f"/downloads/{link.token}")
    assert response.status_code == 200, response.text
    assert (await apis[1].get(f"/downloads/{link.token}")).status_code == 404
    return response.text.split(), str(image)


@dataclass(frozen=True)
class Attempt:
    card: int
    member: int
    api: int
    key: str | None


def attempts_for(card_count: int) -> list[Attempt]:
    """Per card: two members, each through a different API; now and then the keyed one once more
    through the other API with the same key (an idempotent retry racing the first)."""
    attempts = []
    for card in range(card_count):
        first_api = card % 2
        key = f"card-{card}"
        attempts.append(Attempt(card, card % MEMBERS, first_api, key))
        attempts.append(Attempt(card, (card + 1) % MEMBERS, 1 - first_api, None))
        if card % KEYED_EVERY == 0:
            attempts.append(Attempt(card, card % MEMBERS, 1 - first_api, key))
    return attempts


async def counts(rt: Runtime) -> dict[str, int]:
    async with rt.db.read() as session:
        return {
            "orders": await session.scalar(select(func.count()).select_from(Order)) or 0,
            "redemptions": await session.scalar(select(func.count()).select_from(Redemption)) or 0,
            "used_cards": await session.scalar(
                select(func.count()).select_from(Card).where(Card.status == CardStatus.USED)
            )
            or 0,
        }


async def wait_all_active(rt: Runtime, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with rt.db.read() as session:
            waiting = await session.scalar(
                select(func.count()).select_from(Order).where(Order.status != OrderStatus.ACTIVE)
            )
        if waiting == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{waiting} orders not ACTIVE after {seconds} s")


# ---------------------------------------------------------------- the test


async def test_two_apis_and_two_workers_on_one_database_redeem_once_provision_once_and_share_limits(
    rt: Runtime, admin: SignedInUser, deployment: Deployment, apis: list[httpx.AsyncClient]
) -> None:
    # given 8 members and CARDS + 1 cards whose codes came through API 0's download route
    members = [await make_user(rt, f"member{index}", Role.MEMBER) for index in range(MEMBERS)]
    card_codes, image = await seed_cards(rt, admin, apis)
    assert len(card_codes) == CARDS + 1
    spare_code = card_codes.pop()
    try:
        await _check(rt, deployment, apis, members, card_codes, spare_code, image)
    except BaseException:
        print(deployment.log_tail())
        raise


async def _check(
    rt: Runtime,
    deployment: Deployment,
    apis: list[httpx.AsyncClient],
    members: list[SignedInUser],
    card_codes: list[str],
    spare_code: str,
    image: str,
) -> None:
    # when every card is redeemed at once through both APIs by two members, some keyed ones twice
    attempts = attempts_for(len(card_codes))

    def send(attempt: Attempt) -> Any:
        wanted: dict[str, Any] = {"code": card_codes[attempt.card], "osImageId": image}
        if attempt.key is not None:
            wanted["idempotencyKey"] = attempt.key
        return post(apis[attempt.api], REDEEM, {"input": wanted}, members[attempt.member])

    answers = await asyncio.gather(*(send(attempt) for attempt in attempts))

    # then each card has exactly one order; every other answer is CARD_USED or, for the winner's
    # own keyed retry, that same order again
    by_card: dict[int, list[tuple[Attempt, dict[str, Any]]]] = defaultdict(list)
    for attempt, answer in zip(attempts, answers, strict=True):
        by_card[attempt.card].append((attempt, answer))
    winners: dict[int, int] = {}  # order id -> member id
    for card, tries in by_card.items():
        won = [(t, a) for t, a in tries if a["__typename"] == "RedeemCardSuccess"]
        assert len({a["order"]["id"] for _, a in won}) == 1, (card, tries)
        assert len({(t.member, t.key) for t, _ in won}) == 1, (card, tries)
        assert [a for _, a in tries if a["__typename"] != "RedeemCardSuccess"] == [CARD_USED] * (
            len(tries) - len(won)
        ), (card, tries)
        order_id = parse_id(won[0][1]["order"]["id"])
        assert order_id is not None
        winners[order_id] = members[won[0][0].member].id
    assert len(winners) == len(card_codes)
    assert await counts(rt) == {
        "orders": len(card_codes),
        "redemptions": len(card_codes),
        "used_cards": len(card_codes),
    }
    async with rt.db.read() as session:
        orders = {order.id: order for order in await session.scalars(select(Order))}
    assert {order_id: order.member_id for order_id, order in orders.items()} == winners
    assert len({order.card_id for order in orders.values()}) == len(card_codes)

    # and both workers provision every order, each job exactly once
    await wait_all_active(rt, seconds=30)
    async with rt.db.read() as session:
        jobs = list(await session.scalars(select(ProvisioningJob)))
        instances = list(await session.scalars(select(Instance)))
        servers = list(await session.scalars(select(SimulatedServer)))
    assert sorted(job.order_id for job in jobs) == sorted(orders)
    assert {(job.status, job.attempts) for job in jobs} == {(JobStatus.DONE, 1)}
    worker_ids = {f"{socket.gethostname()}:{worker.pid}" for worker in deployment.workers}
    assert {job.worker_id for job in jobs} == worker_ids
    assert sorted(instance.order_id for instance in instances) == sorted(orders)
    assert len(servers) == len(orders)
    assert len({server.ip_address for server in servers}) == len(orders)

    # and the failed-attempt limit is one across the APIs: a member's unknown codes, alternating
    # between them and each from a new address, get CARD_NOT_FOUND 5 times in all, then RATE_LIMITED
    # on either API, even for a good code
    prober = members[0]
    answers = [
        await post(apis[i % 2], REDEEM, {"input": {"code": codes.generate()}}, prober, f"198.51.100.{i + 1}")
        for i in range(9)
    ]
    assert answers[:5] == [CARD_NOT_FOUND] * 5
    assert [a["code"] for a in answers[5:]] == ["RATE_LIMITED"] * 4
    assert all(a["retryAfterSeconds"] > 0 for a in answers[5:])
    for api in apis:
        good = await post(api, PREVIEW, {"code": spare_code}, prober, "198.51.100.200")
        assert good["code"] == "RATE_LIMITED"
        good = await post(
            api, REDEEM, {"input": {"code": spare_code, "osImageId": image}}, prober, "198.51.100.201"
        )
        assert good["code"] == "RATE_LIMITED"

    # and a burst of unknown codes sent at once through both APIs still gets only 5 answers
    burster = members[1]
    burst = await asyncio.gather(
        *(
            post(apis[i % 2], PREVIEW, {"code": codes.generate()}, burster, f"198.51.100.{100 + i}")
            for i in range(12)
        )
    )
    assert sorted(a["code"] for a in burst) == ["CARD_NOT_FOUND"] * 5 + ["RATE_LIMITED"] * 7, burst

    # while another member, from another address, is not limited; and the spare card is untouched
    other = await post(apis[1], PREVIEW, {"code": spare_code}, members[2], "198.51.100.250")
    assert other == {"__typename": "RedemptionPreview"}
    assert (await counts(rt))["used_cards"] == len(card_codes)
