"""Live order status over graphql-transport-ws (RULES-v2 §4), through a real uvicorn and WebSocket,
on both databases: the first message is the order now, every status change follows, orderUpdates
ends after a final state, a member sees only their own orders, the token is checked for as long as
the stream lasts, idle connections are pinged, and a slow subscriber's queue stays bounded."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import websockets
from sqlalchemy import select

from core.ids import parse_id
from core.notify import MISSED, Hub
from core.security import TokenClaims, issue_token
from models import Order, OrderStatus, Role
from services import live as live_service
from services.accounts import disable_user, set_password
from services.order_events import OrderNotice, publish
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from services.runtime import Caller
from tests.conftest import make_user
from tests.live.conftest import (
    MY_ORDER_UPDATES,
    ORDER_UPDATES,
    PROTOCOL,
    connect,
    new_card_code,
    redeem_over_http,
    serving,
)
from tests.provisioning_helpers import RecordingNotifier, place_order

pytestmark = pytest.mark.usefixtures("catalog")


class RefusingProvisioner:
    """A provider that says no: the order FAILS at once."""

    async def provision(self, request):  # type: ignore[no-untyped-def]
        from services.provisioners import Refused

        raise Refused("no capacity on this line")

    async def aclose(self) -> None:
        return None


async def _status(rt, order_id: int) -> OrderStatus:  # type: ignore[no-untyped-def]
    async with rt.db.read() as session:
        status = await session.scalar(select(Order.status).where(Order.id == order_id))
    assert status is not None
    return status


async def test_my_order_updates_follow_a_redemption_made_after_they_opened(rt, member, live):
    async with connect(live, member.token) as client:
        await client.subscribe("mine", MY_ORDER_UPDATES)
        await client.nothing_more(0.3)

        code, image = await new_card_code(rt)
        order_id = await redeem_over_http(live.url, member.token, code, image)
        pending = await client.next_order("mine", "myOrderUpdates")
        assert pending["id"] == order_id
        assert pending["status"] == "PENDING"
        assert pending["memberId"] == str(member.id)
        assert pending["instance"] is None and pending["activatedAt"] is None

        job = await claim_job(rt, "w1")
        assert job is not None and str(job.order_id) == str(parse_id(order_id))
        provisioning = await client.next_order("mine", "myOrderUpdates")
        assert (provisioning["id"], provisioning["status"]) == (order_id, "PROVISIONING")

        await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), job)
        active = await client.next_order("mine", "myOrderUpdates")
        assert (active["id"], active["status"]) == (order_id, "ACTIVE")
        assert active["activatedAt"] is not None
        assert active["instance"]["status"] == "RUNNING"
        # every status once, and the stream stays open for the member's next orders
        await client.nothing_more(0.3)


async def test_order_updates_start_with_the_order_now_and_end_after_a_final_state(rt, member, admin, live):
    placed = await place_order(rt, member.id)
    job = await claim_job(rt, "w1")
    assert job is not None
    async with connect(live, member.token) as client:
        await client.subscribe("one", ORDER_UPDATES, {"id": str(placed.order_id)})
        now = await client.next_order("one", "orderUpdates")
        assert (now["id"], now["status"]) == (str(placed.order_id), "PROVISIONING")

        await run_job(rt, RefusingProvisioner(), RecordingNotifier(), job)
        failed = await client.next_order("one", "orderUpdates")
        assert failed["status"] == "FAILED"
        assert failed["failureReason"] == "no capacity on this line"
        assert await client.receive() == {"id": "one", "type": "complete"}

    # an admin may watch any order: a final one is its one message, then the end
    async with connect(live, admin.token) as client:
        await client.subscribe("any", ORDER_UPDATES, {"id": str(placed.order_id)})
        assert (await client.next_order("any", "orderUpdates"))["status"] == "FAILED"
        assert await client.receive() == {"id": "any", "type": "complete"}
    assert len(rt.db.hub) == 0


async def test_an_admins_retry_reaches_the_members_watch(rt, member, admin, live):
    placed = await place_order(rt, member.id)
    job = await claim_job(rt, "w1")
    assert job is not None
    await run_job(rt, RefusingProvisioner(), RecordingNotifier(), job)
    async with connect(live, member.token) as client:
        await client.subscribe("mine", MY_ORDER_UPDATES)
        await client.nothing_more(0.2)
        async with httpx.AsyncClient(base_url=live.url) as http:
            response = await http.post(
                "/graphql",
                json={
                    "query": f'mutation {{ retryProvisioning(orderId: "{placed.order_id}") {{ __typename }} }}'
                },
                headers=admin.headers,
            )
        assert response.json()["data"]["retryProvisioning"]["__typename"] == "RetryProvisioningSuccess"
        retried = await client.next_order("mine", "myOrderUpdates")
        assert (retried["id"], retried["status"]) == (str(placed.order_id), "PENDING")
        assert retried["failureReason"] is None


async def test_another_members_order_is_refused_and_nothing_follows(rt, member, live):
    other = await make_user(rt, "other-member", Role.MEMBER)
    placed = await place_order(rt, member.id)
    async with connect(live, other.token) as client:
        for op_id, order_id in (("theirs", str(placed.order_id)), ("none", "999999"), ("bad", "x")):
            await client.subscribe(op_id, ORDER_UPDATES, {"id": order_id})
            refused = await client.receive()
            assert refused["type"] == "error" and refused["id"] == op_id, refused
            assert [error["extensions"]["code"] for error in refused["payload"]] == ["FORBIDDEN"]
            assert "data" not in refused
        # the order moving on tells the refused subscriber nothing
        await claim_job(rt, "w1")
        await client.nothing_more(0.3)
    assert await _status(rt, placed.order_id) is OrderStatus.PROVISIONING
    assert len(rt.db.hub) == 0


@pytest.mark.parametrize(
    ("who", "query", "code"),
    [("admin", MY_ORDER_UPDATES, "FORBIDDEN"), (None, MY_ORDER_UPDATES, "UNAUTHENTICATED")],
)
async def test_my_order_updates_is_for_members(rt, admin, live, who, query, code):
    token = admin.token if who == "admin" else None
    async with connect(live, token) as client:
        await client.subscribe("1", query)
        refused = await client.receive()
        assert refused["type"] == "error"
        assert [error["extensions"]["code"] for error in refused["payload"]] == [code]


async def test_a_token_that_signs_nobody_in_is_refused_at_connection_init(live):
    async with websockets.connect(live.ws_url, subprotocols=[PROTOCOL]) as ws:
        await ws.send('{"type": "connection_init", "payload": {"Authorization": "Bearer forged"}}')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.parametrize("ending", ["expires", "disabled", "password changed"])
async def test_the_stream_ends_when_its_token_stops_signing_in(rt, member, clock, ending):
    rt.settings = rt.settings.model_copy(update={"live_recheck_seconds": 0.1, "token_cache_seconds": 0})
    placed = await place_order(rt, member.id)
    token = issue_token(rt.keys.token, TokenClaims(member.id, 1, clock() + timedelta(minutes=5)))
    async with serving(rt) as live, connect(live, token) as client:
        await client.subscribe("1", ORDER_UPDATES, {"id": str(placed.order_id)})
        assert (await client.next_order("1", "orderUpdates"))["status"] == "PENDING"
        await client.nothing_more(0.3)
        if ending == "expires":
            clock.advance(minutes=6)
        elif ending == "disabled":
            assert await disable_user(rt, username=member.viewer.username)
        else:
            await set_password(rt, username=member.viewer.username, password="a new password 42")
        ended = await client.receive(5)
        assert ended["type"] == "next" and ended["payload"]["data"] is None
        assert [error["extensions"]["code"] for error in ended["payload"]["errors"]] == ["UNAUTHENTICATED"]
        assert await client.receive() == {"id": "1", "type": "complete"}
    assert len(rt.db.hub) == 0


async def test_idle_connections_are_pinged(rt, member):
    rt.settings = rt.settings.model_copy(update={"ws_ping_seconds": 0.1})
    async with serving(rt) as live, connect(live, member.token) as client:
        await client.subscribe("mine", MY_ORDER_UPDATES)
        await client.nothing_more(0.55)
        assert client.pings >= 3
        # answered with pongs, the connection is still of use
        code, image = await new_card_code(rt)
        order_id = await redeem_over_http(live.url, member.token, code, image)
        assert (await client.next_order("mine", "myOrderUpdates"))["id"] == order_id


async def test_websocket_origins_follow_the_cors_origins(rt, member):
    rt.settings = rt.settings.model_copy(update={"cors_origins": "https://portal.example.com"})
    async with serving(rt) as live:
        async with connect(live, member.token, origin="https://portal.example.com") as client:
            await client.subscribe("mine", MY_ORDER_UPDATES)
            await client.nothing_more(0.1)
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                live.ws_url, subprotocols=[PROTOCOL], origin="https://elsewhere.example"
            ):
                pass
        assert refused.value.response.status_code == 403


# ---------------------------------------------------------------- a slow subscriber


async def test_an_inbox_that_overflows_reads_again_instead_of_queueing():
    hub = Hub()
    inbox = hub.subscribe([("order", 1)], limit=4)
    other = hub.subscribe([("order", 2), ("member", 7)], limit=4)
    for status in [OrderStatus.PROVISIONING] * 1000:
        publish(hub, OrderNotice(1, 7, status))
    assert len(inbox) == 0 and len(other) == 0  # both overflowed: their notices were dropped

    async def drain(box):  # type: ignore[no-untyped-def]
        return [await box.get(0.01) for _ in range(3)]

    assert await drain(inbox) == [MISSED, None, None]
    publish(hub, OrderNotice(1, 7, OrderStatus.ACTIVE))
    assert await drain(inbox) == [OrderNotice(1, 7, OrderStatus.ACTIVE), None, None]
    assert await drain(other) == [MISSED, None, None]
    inbox.close()
    other.close()
    assert len(hub) == 0


async def test_a_slow_subscriber_gets_the_order_now_after_missing_notices(rt, member):
    rt.settings = rt.settings.model_copy(update={"live_queue_limit": 8})
    placed = await place_order(rt, member.id)
    signin = live_service.Signin.of(rt, Caller(viewer=member.viewer), member.token)
    stream = await live_service.watch_order(rt, signin, str(placed.order_id))
    assert (await anext(stream)).status is OrderStatus.PENDING
    job = await claim_job(rt, "w1")
    await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), job)  # type: ignore[arg-type]
    # the subscriber read nothing meanwhile; 10,000 more notices would not be kept either
    for _ in range(10_000):
        publish(rt.db.hub, OrderNotice(placed.order_id, member.id, OrderStatus.PROVISIONING))
    assert rt.db.hub.backlog(("order", placed.order_id)) == [0]
    latest = await anext(stream)
    assert latest.status is OrderStatus.ACTIVE  # the order now, not the statuses it went through
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert len(rt.db.hub) == 0
