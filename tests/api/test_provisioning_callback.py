"""The platform's signed callback through the real app (`POST /provisioning/callback`, RULES-v2 §3):
accepted → callback → active; a bad signature, a stale timestamp, a body that is not a callback, an
unknown task or a repeat change nothing. And what admins and members read of a waiting order:
`externalTaskId` and `provisioningAttempts` (admins; empty for the member), in one query per list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from models import AttemptOutcome, JobStatus, OrderStatus
from tests.api.test_query_counts import counted_statements
from tests.conftest import GraphQLClient
from tests.fake_provider import (
    PROVIDER_SECRET,
    FakePlatform,
    callback_headers,
    platform_settings,
    serve_platform,
)
from tests.provisioning_helpers import (
    attempts_of,
    database_holds,
    order_state,
    place_order,
    step,
    with_settings,
)

pytestmark = pytest.mark.usefixtures("catalog")

T0 = datetime(2027, 3, 1, 2, 0, 0, tzinfo=UTC)
ORDER = """
query ($id: ID!) {
  order(id: $id) {
    orderNo status externalTaskId
    provisioningAttempts { number startedAt finishedAt outcome detail }
  }
}
"""
MEMBER_ORDER = """
query ($id: ID!) { order(id: $id) { orderNo status provisioningAttempts { number outcome } } }
"""
ORDERS = """
query { orders(first: 50) { nodes { orderNo externalTaskId provisioningAttempts { number outcome } } } }
"""


@pytest.fixture
async def platform(clock) -> AsyncIterator[FakePlatform]:  # type: ignore[no-untyped-def]
    clock.set(T0)
    async with serve_platform(finish_after=10_000, clock=lambda: clock().timestamp()) as running:
        yield running


@pytest.fixture
def prt(rt, platform):  # type: ignore[no-untyped-def]
    return with_settings(rt, **platform_settings(platform))


@pytest.fixture
async def http(prt) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    from tihuo.app import create_app

    transport = httpx.ASGITransport(app=create_app(runtime=prt), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def waiting_order(prt, member):  # type: ignore[no-untyped-def]
    placed = await place_order(prt, member.id)
    assert await step(prt)
    assert (await order_state(prt, placed.order_id)).order.status is OrderStatus.PROVISIONING
    return placed


async def post_callback(http, body: dict, *, secret=PROVIDER_SECRET, now=None, clock=None):  # type: ignore[no-untyped-def]
    raw = json.dumps(body).encode()
    at = now if now is not None else clock().timestamp()
    return await http.post("/provisioning/callback", content=raw, headers=callback_headers(raw, secret, at))


async def snapshot(rt, order_id: int) -> tuple:  # type: ignore[type-arg]
    state = await order_state(rt, order_id)
    attempts = [(a.number, a.outcome, a.detail) for a in await attempts_of(rt, order_id)]
    job = state.job
    return (
        state.order.status,
        state.order.external_task_id,
        job.status,
        job.run_after,
        job.reported,
        job.password_cipher,
        attempts,
        len(state.instances),
    )


async def test_accepted_then_a_signed_callback_makes_the_order_active_with_the_platforms_password(
    prt, http, platform, member, clock
):
    placed = await waiting_order(prt, member)
    body = {
        "taskId": f"task-{placed.order_no}",
        "orderNo": placed.order_no,
        "status": "active",
        "ipAddress": "203.0.113.9",
        "rootPassword": "Cb-Root!pass77",
    }

    answer = await post_callback(http, body, clock=clock)

    assert (answer.status_code, answer.json()) == (200, {"applied": True})
    # the report waits for the worker, due now; the password only sealed
    state = await order_state(prt, placed.order_id)
    assert (state.job.reported, state.job.run_after) == (
        {"status": "active", "ipAddress": "203.0.113.9", "ref": None, "rootPassword": True},
        clock(),
    )
    assert not await database_holds(prt, "Cb-Root!pass77")
    assert await step(prt)
    state = await order_state(prt, placed.order_id)
    assert (state.order.status, [i.ip_address for i in state.instances]) == (
        OrderStatus.ACTIVE,
        ["203.0.113.9"],
    )
    [sms] = platform.calls("POST", "/sms")
    assert "登录密码：Cb-Root!pass77，" in sms.json["text"]
    assert not await database_holds(prt, "Cb-Root!pass77")
    assert platform.calls("GET", "/provision/tasks/") == []  # the callback came first: no poll
    attempts = await attempts_of(prt, placed.order_id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.ACCEPTED, AttemptOutcome.DONE]
    assert attempts[1].detail is not None and attempts[1].detail.startswith("callback: ")
    assert "******" in attempts[1].detail

    # and the same callback again (a replay within the window) changes nothing
    before = await snapshot(prt, placed.order_id)
    again = await post_callback(http, body, clock=clock)
    assert (again.status_code, again.json()) == (200, {"applied": False})
    assert await snapshot(prt, placed.order_id) == before


async def test_a_failed_callback_fails_the_order_with_its_reason(prt, http, member, clock):
    placed = await waiting_order(prt, member)
    body = {
        "taskId": f"task-{placed.order_no}",
        "orderNo": placed.order_no,
        "status": "failed",
        "reason": "disk array offline",
    }

    assert (await post_callback(http, body, clock=clock)).status_code == 200
    assert await step(prt)

    state = await order_state(prt, placed.order_id)
    assert (state.order.status, state.order.failure_reason, state.job.status) == (
        OrderStatus.FAILED,
        "disk array offline",
        JobStatus.FAILED,
    )


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("bad signature", 401),
        ("stale timestamp", 401),
        ("future timestamp", 401),
        ("no headers", 401),
        ("not json", 400),
        ("unknown status", 400),
        ("unknown task", 404),
    ],
)
async def test_a_callback_that_is_not_the_platforms_or_not_fresh_is_refused_and_changes_nothing(
    prt, http, member, clock, case, status
):
    placed = await waiting_order(prt, member)
    body = {
        "taskId": f"task-{placed.order_no}",
        "orderNo": placed.order_no,
        "status": "active",
        "ipAddress": "203.0.113.9",
    }
    raw = json.dumps(body).encode()
    headers = callback_headers(raw, PROVIDER_SECRET, clock().timestamp())
    if case == "bad signature":
        headers = callback_headers(raw, "not-the-secret", clock().timestamp())
    elif case == "stale timestamp":
        headers = callback_headers(raw, PROVIDER_SECRET, (clock() - timedelta(seconds=301)).timestamp())
    elif case == "future timestamp":
        headers = callback_headers(raw, PROVIDER_SECRET, (clock() + timedelta(seconds=301)).timestamp())
    elif case == "no headers":
        headers = {"Content-Type": "application/json"}
    elif case == "not json":
        raw = b"status=active"
        headers = callback_headers(raw, PROVIDER_SECRET, clock().timestamp())
    elif case == "unknown status":
        raw = json.dumps({**body, "status": "done"}).encode()
        headers = callback_headers(raw, PROVIDER_SECRET, clock().timestamp())
    elif case == "unknown task":
        raw = json.dumps({**body, "taskId": "task-someone-else"}).encode()
        headers = callback_headers(raw, PROVIDER_SECRET, clock().timestamp())
    before = await snapshot(prt, placed.order_id)

    answer = await http.post("/provisioning/callback", content=raw, headers=headers)

    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert (
        answer.json()["errors"][0]["extensions"]["code"]
        == {401: "UNAUTHENTICATED", 400: "BAD_REQUEST", 404: "NOT_FOUND"}[status]
    )
    assert await snapshot(prt, placed.order_id) == before
    assert not await step(prt)  # nothing was made due


async def test_admins_see_the_task_and_every_attempt_and_a_member_sees_none(prt, http, member, admin, clock):
    placed = await waiting_order(prt, member)
    gql = GraphQLClient(http)

    as_admin = (await gql(ORDER, {"id": str(placed.order_id)}, user=admin))["data"]["order"]
    as_member = await gql(MEMBER_ORDER, {"id": str(placed.order_id)}, user=member)
    member_sees_task = await gql(ORDER, {"id": str(placed.order_id)}, user=member)

    assert as_admin["externalTaskId"] == f"task-{placed.order_no}"
    [attempt] = as_admin["provisioningAttempts"]
    assert (attempt["number"], attempt["outcome"], attempt["startedAt"], attempt["finishedAt"]) == (
        1,
        "ACCEPTED",
        "2027-03-01T02:00:00+00:00",
        "2027-03-01T02:00:00+00:00",
    )
    assert attempt["detail"] == f'HTTP 202: {{"status": "accepted", "taskId": "task-{placed.order_no}"}}'
    assert as_member == {
        "data": {"order": {"orderNo": placed.order_no, "status": "PROVISIONING", "provisioningAttempts": []}}
    }
    assert (
        member_sees_task["data"]["order"] is None
        or member_sees_task["data"]["order"]["externalTaskId"] is None
    )
    assert [e["extensions"]["code"] for e in member_sees_task["errors"]] == ["FORBIDDEN"]


async def test_the_order_list_reads_every_orders_attempts_in_one_statement(prt, http, member, admin):
    for _ in range(3):
        await waiting_order(prt, member)
    gql = GraphQLClient(http)
    await gql(ORDERS, user=admin)  # warm caches (the token, the schema)

    with counted_statements(prt) as statements:
        nodes = (await gql(ORDERS, user=admin))["data"]["orders"]["nodes"]

    assert [len(node["provisioningAttempts"]) for node in nodes] == [1, 1, 1]
    assert len([s for s in statements if "provisioning_attempts" in s]) == 1
