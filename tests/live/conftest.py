"""Fixtures for the live subscriptions: the app served by a real uvicorn on a loopback port (in this
test's event loop, sharing its runtime, so the test can move the clock and run the worker's steps),
and a plain graphql-transport-ws client on the `websockets` library that shows every message."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import uvicorn
import websockets

from services.runtime import Runtime
from tests.processes import free_port
from tihuo.app import create_app

PROTOCOL = "graphql-transport-ws"
ORDER_FIELDS = "id status memberId failureReason activatedAt instance { name status }"
ORDER_UPDATES = f"subscription ($id: ID!) {{ orderUpdates(orderId: $id) {{ {ORDER_FIELDS} }} }}"
MY_ORDER_UPDATES = f"subscription {{ myOrderUpdates {{ {ORDER_FIELDS} }} }}"


@dataclasses.dataclass
class LiveServer:
    url: str
    app: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def serving(rt: Runtime) -> AsyncIterator[LiveServer]:
    """The app around `rt` on a real uvicorn server (with its lifespan: the LISTEN connection on
    PostgreSQL), until the block ends."""
    app = create_app(runtime=rt)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", lifespan="on"
        )
    )
    running = asyncio.create_task(server.serve())
    while not server.started:
        if running.done():
            running.result()
        await asyncio.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await running


@pytest.fixture
async def live(rt: Runtime) -> AsyncIterator[LiveServer]:
    async with serving(rt) as server:
        yield server


class Client:
    """One graphql-transport-ws connection, message by message. Pings are answered and counted."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pings = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def receive(self, seconds: float = 10) -> dict[str, Any]:
        """The next message but pings, within `seconds` in all."""
        async with asyncio.timeout(seconds):
            while True:
                frame = await self.ws.recv()
                assert isinstance(frame, str), "graphql-transport-ws messages are text frames"
                message: dict[str, Any] = orjson.loads(frame)
                if message["type"] != "ping":
                    return message
                self.pings += 1
                await self.send({"type": "pong"})

    async def nothing_more(self, seconds: float = 0.5) -> None:
        """Nothing but pings arrives within `seconds`."""
        with pytest.raises(TimeoutError):
            await self.receive(seconds)

    async def init(self, token: str | None) -> dict[str, Any]:
        await self.send(
            {
                "type": "connection_init",
                "payload": {} if token is None else {"Authorization": f"Bearer {token}"},
            }
        )
        return await self.receive()

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}
        )

    async def next_order(self, op_id: str, field: str) -> dict[str, Any]:
        message = await self.receive()
        assert message["type"] == "next" and message["id"] == op_id, message
        assert "errors" not in message["payload"], message
        order: dict[str, Any] = message["payload"]["data"][field]
        return order


@asynccontextmanager
async def connect(server: LiveServer, token: str | None = None, **options: Any) -> AsyncIterator[Client]:
    """A connection signed in with `token` (acknowledged), or signed out."""
    async with websockets.connect(server.ws_url, subprotocols=[PROTOCOL], **options) as ws:
        client = Client(ws)
        ack = await client.init(token)
        assert ack == {"type": "connection_ack"}, ack
        yield client


REDEEM = """
mutation ($input: RedeemCardInput!) {
  redeemCard(input: $input) { __typename ... on RedeemCardSuccess { order { id status } } ... on Error { code } }
}
"""


async def new_card_code(rt: Runtime) -> tuple[str, str]:
    """A fresh one-card cloud-server batch's code, and the id of an image its line offers."""
    from datetime import date

    from sqlalchemy import select

    from models import Card, Line, OsImage, ProductType, Role
    from services import cards, codes
    from services.accounts import create_user
    from services.pricing import ConfigInput
    from services.runtime import Caller

    async with rt.db.read() as session:
        line = await session.scalar(select(Line.id).where(Line.code == "sh-bgp"))
        image = await session.scalar(select(OsImage.id).where(OsImage.code == "ubuntu-22.04"))
    issuer = Caller(
        viewer=await create_user(
            rt, username=f"issuer-{free_port()}", password="issuer password 1", role=Role.ADMIN
        )
    )
    config = ConfigInput(
        ProductType.CLOUD_SERVER,
        str(line),
        1,
        cpu_cores=1,
        memory_gb=1,
        disk_gb=10,
        bandwidth_mbps=10,
        defense_gbps=0,
    )
    batch = await cards.create_batch(
        rt,
        issuer,
        cards.NewBatch(
            name="实时测试卡", batch_no=None, config=config, quantity=1, valid_until=date(2099, 12, 31)
        ),
    )
    async with rt.db.read() as session:
        card = await session.scalar(select(Card).where(Card.batch_id == batch.id))
    assert card is not None
    return codes.CodeSealer(rt.keys).open(card.code_hash, card.code_cipher, card.key_version), str(image)


async def redeem_over_http(url: str, token: str, code: str, image: str) -> str:
    """redeemCard through the API at `url`; the new order's id."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post(
            "/graphql",
            json={"query": REDEEM, "variables": {"input": {"code": code, "osImageId": image}}},
            headers={"Authorization": f"Bearer {token}"},
        )
    result = response.json()["data"]["redeemCard"]
    assert result["__typename"] == "RedeemCardSuccess", result
    order_id: str = result["order"]["id"]
    return order_id
