"""Python's `gql` client with its websockets transport (graphql-transport-ws) subscribing to tihuo:
myOrderUpdates follows a redemption made after it opened, PENDING → PROVISIONING → ACTIVE, and a
subscription to another member's order fails with FORBIDDEN."""

from __future__ import annotations

import asyncio

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from models import Role
from services.provisioners import SimulatedProvisioner
from services.provisioning_jobs import claim_job, run_job
from tests.conftest import make_user
from tests.live.conftest import MY_ORDER_UPDATES, ORDER_UPDATES, new_card_code, redeem_over_http
from tests.provisioning_helpers import RecordingNotifier, place_order

pytestmark = pytest.mark.usefixtures("catalog")


def _transport(url: str, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=url,
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )


async def test_gql_follows_a_redemption_to_active(rt, member, live):
    code, image = await new_card_code(rt)
    async with Client(transport=_transport(live.ws_url, member.token)) as session:
        updates = session.subscribe(gql(MY_ORDER_UPDATES))
        # gql sends the subscription when the generator first runs; redeem once the server has it
        first = asyncio.ensure_future(anext(updates))
        async with asyncio.timeout(10):
            while len(rt.db.hub) == 0:  # noqa: ASYNC110 (the server's state, no event to wait on)
                await asyncio.sleep(0.01)
        order_id = await redeem_over_http(live.url, member.token, code, image)
        pending = (await first)["myOrderUpdates"]
        assert (pending["id"], pending["status"]) == (order_id, "PENDING")

        job = await claim_job(rt, "w1")
        assert job is not None
        assert (await anext(updates))["myOrderUpdates"]["status"] == "PROVISIONING"
        await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), job)
        active = (await anext(updates))["myOrderUpdates"]
        assert (active["id"], active["status"]) == (order_id, "ACTIVE")
        assert active["instance"]["status"] == "RUNNING"
        await updates.aclose()


async def test_gql_is_refused_another_members_order(rt, member, live):
    other = await make_user(rt, "other-member", Role.MEMBER)
    placed = await place_order(rt, member.id)
    async with Client(transport=_transport(live.ws_url, other.token)) as session:
        request = gql(ORDER_UPDATES)
        request.variable_values = {"id": str(placed.order_id)}
        with pytest.raises(TransportQueryError) as refused:
            async for _ in session.subscribe(request):
                pytest.fail("a message about another member's order")
    assert refused.value.errors is not None
    assert [error["extensions"]["code"] for error in refused.value.errors] == ["FORBIDDEN"]
