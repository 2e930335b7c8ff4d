"""An endpoint may not point the server at itself or its neighbours (RULES-v2 §2): loopback,
private, link-local, shared and metadata addresses are refused at create and update
(InvalidInputError on `url`, nothing changes), and again at each delivery, when DNS may have
changed: no request is made. TIHUO_WEBHOOK_ALLOW_PRIVATE is left at its default (false) here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, update

from models import AuditEntry, WebhookEndpoint
from tests.api.test_webhooks import CREATE, UPDATE, deliver_due, delivery_rows, redeem_one
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("catalog")

# a public address written as such: accepted without a DNS look-up (TEST-NET addresses are not
# global, so a documentation range would be refused)
PUBLIC = "http://93.184.215.14/hooks"
REFUSED = [
    "http://127.0.0.1:8080/hooks",
    "http://localhost/hooks",
    "http://10.1.2.3/hooks",
    "http://172.16.0.5/hooks",
    "http://192.168.1.1/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://100.64.0.1/hooks",
    "http://0.0.0.0/hooks",
    "http://[::1]/hooks",
    "http://[fd00:ec2::254]/hooks",
    "http://[::ffff:127.0.0.1]/hooks",
    "http://[fe80::1]/hooks",
    "https://224.0.0.1/hooks",
    "ftp://93.184.215.14/hooks",
    "not a url",
    "http://user:pw@93.184.215.14/hooks",
    "http://no-such-host.invalid/hooks",
]


async def counts(rt) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    async with rt.db.read() as session:
        return (
            await session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0,
            await session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
        )


@pytest.mark.parametrize("url", REFUSED)
async def test_an_endpoint_for_a_refused_address_is_not_made(gql, rt, admin, url):
    before = await counts(rt)

    result = await gql(CREATE, {"input": {"url": url, "events": ["CARD_REDEEMED"]}}, user=admin)

    refused = result["data"]["createWebhookEndpoint"]
    assert refused["__typename"] == "InvalidInputError", result
    assert [e["field"] for e in refused["fieldErrors"]] == ["url"]
    assert await counts(rt) == before


async def test_a_public_address_is_accepted_and_an_update_to_a_private_one_refused(gql, rt, admin):
    made = await gql(CREATE, {"input": {"url": PUBLIC, "events": ["CARD_REDEEMED"]}}, user=admin)
    endpoint = made["data"]["createWebhookEndpoint"]["endpoint"]
    assert endpoint["url"] == PUBLIC
    before = await counts(rt)

    result = await gql(UPDATE, {"id": endpoint["id"], "input": {"url": "http://10.0.0.1/x"}}, user=admin)

    assert result["data"]["updateWebhookEndpoint"] == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
    }
    assert await counts(rt) == before
    async with rt.db.read() as session:
        assert await session.scalar(select(WebhookEndpoint.url)) == PUBLIC


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


async def test_an_address_that_became_private_is_refused_at_delivery_and_nothing_is_sent(
    gql, client, rt, admin, member, receiver
):
    # given an endpoint saved with a public address whose name now leads to the receiver on loopback
    made = await gql(CREATE, {"input": {"url": PUBLIC, "events": ["CARD_REDEEMED"]}}, user=admin)
    endpoint_id = int(made["data"]["createWebhookEndpoint"]["endpoint"]["id"])
    async with rt.db.write() as session:
        await session.execute(
            update(WebhookEndpoint).values(url=receiver.url.replace("127.0.0.1", "localhost"))
        )
    await redeem_one(gql, client, admin, member)

    assert await deliver_due(rt) == ["refused"]

    assert receiver.received == []
    [delivery] = await delivery_rows(rt)
    assert (delivery.endpoint_id, delivery.status.value, delivery.attempts, delivery.last_status_code) == (
        endpoint_id,
        "PENDING",
        1,
        None,
    )
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("refused: the host resolves to a loopback")
