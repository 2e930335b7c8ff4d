"""Signed webhooks (RULES-v2 §2) end to end: endpoints made through the API, events written with
the change that caused them, delivered by the worker's own code to a real receiver that verifies
every request with the `standardwebhooks` package; retries, 410, rotation, redelivery, the
delivery log, metrics, and no secret anywhere it should not be."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from core.db import DuplicateKey
from models import (
    AuditEntry,
    Card,
    CardBatch,
    ProductModel,
    Role,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from services.errors import OutOfStock
from services.redemption import _request_hash
from services.runtime import Runtime
from services.webhook_delivery import RETRY_SCHEDULE, attempt, claim_deliveries, new_client, record
from tests.api.test_redemption import late_write
from tests.conftest import make_user
from tests.factories import bare_metal_config, catalog_ids, create_batch, download_codes, virtual_host_config
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("catalog")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks"
CREATE = """
mutation ($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  __typename
  ... on WebhookEndpointSecret { secret endpoint { id url description events enabled disabledReason } }
  ... on InvalidInputError { code fieldErrors { field message } } } }
"""
UPDATE = """
mutation ($id: ID!, $input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(id: $id, input: $input) {
  __typename
  ... on UpdateWebhookEndpointSuccess { endpoint { id url events enabled disabledReason } }
  ... on Error { code } } }
"""
ROTATE = """
mutation ($id: ID!) { rotateWebhookEndpointSecret(id: $id) {
  __typename ... on WebhookEndpointSecret { secret endpoint { id } } ... on Error { code } } }
"""
DELETE = """
mutation ($id: ID!) { deleteWebhookEndpoint(id: $id) {
  __typename ... on DeleteWebhookEndpointSuccess { id } ... on Error { code } } }
"""
REDELIVER = """
mutation ($id: ID!) { redeliverWebhook(deliveryId: $id) {
  __typename ... on RedeliverWebhookSuccess { delivery { id messageId status attempts payload } }
  ... on Error { code } } }
"""
DELIVERIES = """
query ($id: ID!, $status: WebhookDeliveryStatus) { webhookEndpoint(id: $id) {
  id enabled disabledReason
  deliveries(status: $status) { totalCount nodes {
    id messageId event status attempts lastStatusCode lastError deliveredAt nextAttemptAt payload } } } }
"""
ENDPOINTS = "query { webhookEndpoints { id url events enabled } }"
REDEEM = """
mutation ($input: RedeemCardInput!) { redeemCard(input: $input) {
  __typename ... on RedeemCardSuccess { order { id orderNo listPrice } } ... on Error { code } } }
"""
PHONE = "13800000000"  # the member fixture's phone


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    # the receiver listens on loopback: the address rule is lifted (tests/api/test_webhook_addresses.py
    # holds it)
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


async def make_endpoint(gql, admin, receiver: Receiver, events: list[str]) -> tuple[str, str]:
    """An endpoint for the receiver through the API; the receiver learns its secret."""
    result = await gql(CREATE, {"input": {"url": receiver.url, "events": events}}, user=admin)
    made = result["data"]["createWebhookEndpoint"]
    assert made["__typename"] == "WebhookEndpointSecret", result
    receiver.secrets.append(made["secret"])
    return made["endpoint"]["id"], made["secret"]


async def deliver_due(rt: Runtime, worker_id: str = "test-worker") -> list[str]:
    """What the worker's loop does once: claim every due delivery, send each and record the outcomes
    (its real code)."""
    async with new_client(rt) as client:
        done = [await attempt(rt, client, claimed) for claimed in await claim_deliveries(rt, worker_id, 100)]
    return await record(rt, done) if done else []


async def redeem_one(gql, client, admin, member, **batch: Any) -> tuple[str, dict[str, Any]]:
    """A one-card virtual-host batch, its card redeemed by `member` through the API."""
    ids = await catalog_ids(gql, admin)
    made = await create_batch(gql, admin, config=virtual_host_config(ids["sh-bgp"], ids["vh-basic"]), **batch)
    [code] = await download_codes(gql, client, admin, made["id"])
    result = await gql(REDEEM, {"input": {"code": code}}, user=member)
    assert result["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess", result
    return code, result["data"]["redeemCard"]["order"]


def validate(payload: dict[str, Any]) -> None:
    """The payload against its documented JSON Schema (docs/webhooks/<type>.schema.json)."""
    schema = json.loads((DOCS / f"{payload['type']}.schema.json").read_text(encoding="utf-8"))
    jsonschema_rs.validator_for(schema).validate(payload)


async def rows(rt: Runtime, model: Any) -> int:
    async with rt.db.read() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def delivery_rows(rt: Runtime) -> list[WebhookDelivery]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


# ---------------------------------------------------------------- card.redeemed, signed and verified


async def test_a_redemption_sends_card_redeemed_signed_and_verified_by_standardwebhooks(
    gql, client, rt, admin, member, receiver
):
    endpoint_id, _ = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    code, order = await redeem_one(gql, client, admin, member)

    assert await deliver_due(rt) == ["delivered"]

    [got] = receiver.received
    assert got.verified_by == (0,)
    assert got.path == "/hooks"
    assert got.headers["content-type"] == "application/json"
    assert got.webhook_id.startswith("msg_")
    payload = got.payload
    validate(payload)
    assert payload["type"] == "card.redeemed"
    data = payload["data"]
    assert data["order"]["id"] == order["id"]
    assert data["order"]["orderNo"] == order["orderNo"]
    assert data["order"]["listPrice"] == order["listPrice"]
    assert data["order"]["status"] == "PENDING"
    assert data["member"] == {"id": str(member.id)}
    assert data["card"]["maskedCode"] == "****-****-****-" + code.replace("-", "")[-4:]
    assert data["card"]["seq"] == 1
    assert datetime.fromisoformat(payload["timestamp"]).utcoffset() == timedelta(0)
    text = got.body.decode()
    for secret in (code, code.replace("-", ""), PHONE, member.token, member.password):
        assert secret not in text
    # the delivery log shows what was sent
    log = (await gql(DELIVERIES, {"id": endpoint_id}, user=admin))["data"]["webhookEndpoint"]
    [delivery] = log["deliveries"]["nodes"]
    assert log["deliveries"]["totalCount"] == 1
    assert (delivery["messageId"], delivery["event"], delivery["status"], delivery["attempts"]) == (
        got.webhook_id,
        "CARD_REDEEMED",
        "DELIVERED",
        1,
    )
    assert (delivery["lastStatusCode"], delivery["lastError"], delivery["nextAttemptAt"]) == (204, None, None)
    assert delivery["payload"].encode() == got.body
    assert delivery["deliveredAt"] is not None


async def test_no_endpoint_no_message_and_one_only_for_the_events_asked_for(
    gql, client, rt, admin, member, receiver
):
    await redeem_one(gql, client, admin, member)
    assert (await rows(rt, WebhookMessage), await rows(rt, WebhookDelivery)) == (0, 0)

    # an endpoint that asked for other events gets no card.redeemed; a disabled one gets nothing
    await make_endpoint(gql, admin, receiver, ["ORDER_FAILED"])
    off, _ = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    await gql(UPDATE, {"id": off, "input": {"enabled": False}}, user=admin)
    await redeem_one(gql, client, admin, member)

    assert (await rows(rt, WebhookMessage), await rows(rt, WebhookDelivery)) == (0, 0)
    assert await deliver_due(rt) == []


async def test_a_rolled_back_redemption_sends_nothing(gql, client, rt, admin, member, receiver):
    # given an endpoint for card.redeemed and a bare-metal card whose look-up saw stock, then
    # another redemption took the last unit before its write: the model's CHECK refuses the write
    await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    ids = await catalog_ids(gql, admin)
    made = await create_batch(gql, admin, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"]))
    async with rt.db.write() as session:
        await session.execute(update(ProductModel).values(stock=0))
        batch = await session.get(CardBatch, int(made["id"]))
        card_id = await session.scalar(select(Card.id).where(Card.batch_id == int(made["id"])))
    assert batch is not None and card_id is not None
    write = late_write(
        rt, member, batch, card_id, key=None, request_hash=_request_hash("x", None), order_no="T1"
    )

    with pytest.raises(OutOfStock):
        await rt.db.run_write(write.run)

    assert (await rows(rt, WebhookMessage), await rows(rt, WebhookDelivery)) == (0, 0)
    assert await deliver_due(rt) == []
    assert receiver.received == []


async def test_concurrent_redemptions_of_the_last_unit_send_exactly_one_message(
    gql, client, rt, admin, receiver
):
    await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    ids = await catalog_ids(gql, admin)
    made = await create_batch(
        gql, admin, quantity=4, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"])
    )
    found = await download_codes(gql, client, admin, made["id"])
    async with rt.db.write() as session:
        await session.execute(update(ProductModel).values(stock=1))
    members = [await make_user(rt, f"racer{i}", Role.MEMBER) for i in range(4)]
    image = await first_linux_image(gql, admin)

    answers = await asyncio.gather(
        *(
            gql(REDEEM, {"input": {"code": c, "osImageId": image}}, user=m)
            for c, m in zip(found, members, strict=True)
        )
    )

    kinds = sorted(a["data"]["redeemCard"]["__typename"] for a in answers)
    assert kinds == ["OutOfStockError"] * 3 + ["RedeemCardSuccess"]
    [winner] = [a["data"]["redeemCard"]["order"] for a in answers if "order" in a["data"]["redeemCard"]]
    assert (await rows(rt, WebhookMessage), await rows(rt, WebhookDelivery)) == (1, 1)
    assert await deliver_due(rt) == ["delivered"]
    [got] = receiver.received
    assert got.payload["data"]["order"]["id"] == winner["id"]


async def first_linux_image(gql, admin) -> str:
    result = await gql("query { regions { lines { code osImages { id name family } } } }", user=admin)
    return next(
        image["id"]
        for region in result["data"]["regions"]
        for line in region["lines"]
        if line["code"] == "sh-bgp"
        for image in line["osImages"]
        if image["family"] == "LINUX"
    )


# ---------------------------------------------------------------- retries, 410


async def test_500_then_200_is_one_message_in_two_attempts_five_seconds_apart(
    gql, client, rt, clock, admin, member, receiver
):
    endpoint_id, _ = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    receiver.answers = ["500"]
    await redeem_one(gql, client, admin, member)
    clock.set(rt.now())

    assert await deliver_due(rt) == ["retried"]
    [delivery] = await delivery_rows(rt)
    assert (delivery.status.value, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "PENDING",
        1,
        500,
        "HTTP 500",
    )
    assert delivery.next_attempt_at == rt.now() + timedelta(seconds=5)
    # not due before its time
    clock.advance(seconds=4.9)
    assert await deliver_due(rt) == []
    clock.advance(seconds=0.1)
    assert await deliver_due(rt) == ["delivered"]

    first, second = receiver.received
    assert first.webhook_id == second.webhook_id
    assert first.body == second.body
    assert first.verified_by == second.verified_by == (0,)
    log = (await gql(DELIVERIES, {"id": endpoint_id}, user=admin))["data"]["webhookEndpoint"]
    [node] = log["deliveries"]["nodes"]
    assert (node["status"], node["attempts"], node["lastStatusCode"], node["lastError"]) == (
        "DELIVERED",
        2,
        204,
        None,
    )


async def test_every_failure_waits_as_the_schedule_says_then_the_delivery_fails(
    gql, client, rt, clock, admin, member, receiver
):
    await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    receiver.default = "500"
    await redeem_one(gql, client, admin, member)
    clock.set(rt.now())

    waits = []
    for number in range(1, len(RETRY_SCHEDULE) + 2):
        outcome = await deliver_due(rt)
        [delivery] = await delivery_rows(rt)
        assert delivery.attempts == number
        if number <= len(RETRY_SCHEDULE):
            assert outcome == ["retried"]
            assert delivery.next_attempt_at is not None
            waits.append(delivery.next_attempt_at - rt.now())
            clock.set(delivery.next_attempt_at)
        else:
            assert outcome == ["failed"]
            assert (delivery.status.value, delivery.next_attempt_at) == ("FAILED", None)

    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    assert len(receiver.received) == 8
    assert len({r.webhook_id for r in receiver.received}) == 1
    clock.advance(days=2)
    assert await deliver_due(rt) == []


async def test_410_disables_the_endpoint_with_a_reason_and_nothing_more_is_queued(
    gql, client, rt, admin, member, receiver
):
    endpoint_id, _ = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    receiver.default = "410"
    await redeem_one(gql, client, admin, member)

    assert await deliver_due(rt) == ["disabled"]

    log = (await gql(DELIVERIES, {"id": endpoint_id}, user=admin))["data"]["webhookEndpoint"]
    assert log["enabled"] is False
    assert log["disabledReason"].startswith("the receiver answered 410 Gone")
    [node] = log["deliveries"]["nodes"]
    assert (node["status"], node["attempts"], node["lastStatusCode"]) == ("FAILED", 1, 410)
    await redeem_one(gql, client, admin, member)
    assert await rows(rt, WebhookMessage) == 1
    assert await deliver_due(rt) == []

    # enabled again by an admin: the reason goes
    again = await gql(UPDATE, {"id": endpoint_id, "input": {"enabled": True}}, user=admin)
    assert again["data"]["updateWebhookEndpoint"]["endpoint"]["disabledReason"] is None


# ---------------------------------------------------------------- rotation, redelivery


async def test_after_a_rotation_both_secrets_sign_for_24_hours_then_only_the_new_one(
    gql, client, rt, clock, admin, member, receiver
):
    endpoint_id, old = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    clock.set(rt.now())
    rotated = (await gql(ROTATE, {"id": endpoint_id}, user=admin))["data"]["rotateWebhookEndpointSecret"]
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old
    receiver.secrets.append(new)

    await redeem_one(gql, client, admin, member)
    clock.advance(hours=23, minutes=59)
    assert await deliver_due(rt) == ["delivered"]
    clock.advance(minutes=1, seconds=1)
    await redeem_one(gql, client, admin, member)
    assert await deliver_due(rt) == ["delivered"]

    during, after = receiver.received
    # in the overlap: two signatures, each verified alone by its own secret
    assert len(during.signatures) == 2
    assert during.verified_by == (0, 1)
    assert len(after.signatures) == 1
    assert after.verified_by == (1,)
    [entry] = [e for e in await audit(rt) if e.action == "webhook.rotate_secret"]
    assert entry.entity_id == endpoint_id
    assert old not in json.dumps(entry.new) and new not in json.dumps(entry.new)


async def test_redeliver_sends_the_same_message_again(gql, client, rt, admin, member, receiver):
    endpoint_id, _ = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    await redeem_one(gql, client, admin, member)
    assert await deliver_due(rt) == ["delivered"]
    [first] = await delivery_rows(rt)

    result = await gql(REDELIVER, {"id": str(first.id)}, user=admin)

    queued = result["data"]["redeliverWebhook"]["delivery"]
    assert (queued["status"], queued["attempts"]) == ("PENDING", 0)
    assert queued["messageId"] == receiver.received[0].webhook_id
    assert await deliver_due(rt) == ["delivered"]
    original, again = receiver.received
    assert (again.webhook_id, again.body, again.verified_by) == (original.webhook_id, original.body, (0,))
    assert await rows(rt, WebhookMessage) == 1
    log = (await gql(DELIVERIES, {"id": endpoint_id, "status": "DELIVERED"}, user=admin))["data"]
    assert log["webhookEndpoint"]["deliveries"]["totalCount"] == 2
    [entry] = [e for e in await audit(rt) if e.action == "webhook.redeliver"]
    assert (entry.entity_id, entry.new) == (
        str(first.id),
        {"deliveryId": queued["id"], "messageId": original.webhook_id},
    )
    # an unknown delivery: NotFoundError, nothing queued
    missing = await gql(REDELIVER, {"id": "999999"}, user=admin)
    assert missing["data"]["redeliverWebhook"] == {"__typename": "NotFoundError", "code": "NOT_FOUND"}
    assert len(await delivery_rows(rt)) == 2


async def audit(rt: Runtime) -> list[AuditEntry]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


# ---------------------------------------------------------------- managing endpoints


async def test_endpoints_are_made_listed_changed_and_deleted_by_admins_and_audited(gql, rt, admin, receiver):
    made = (
        await gql(
            CREATE,
            {
                "input": {
                    "url": receiver.url,
                    "description": " billing ",
                    "events": ["ORDER_ACTIVE", "CARD_REDEEMED"],
                }
            },
            user=admin,
        )
    )["data"]["createWebhookEndpoint"]
    endpoint = made["endpoint"]
    assert made["secret"].startswith("whsec_")
    assert endpoint == {
        "id": endpoint["id"],
        "url": receiver.url,
        "description": "billing",
        "events": ["CARD_REDEEMED", "ORDER_ACTIVE"],
        "enabled": True,
        "disabledReason": None,
    }
    # the secret is kept sealed: neither its text nor its key bytes are in the row
    async with rt.db.read() as session:
        row = await session.get(WebhookEndpoint, int(endpoint["id"]))
    assert row is not None
    key = base64.b64decode(made["secret"].removeprefix("whsec_"))
    assert key not in row.secret_sealed and made["secret"].encode() not in row.secret_sealed

    changed = await gql(UPDATE, {"id": endpoint["id"], "input": {"events": ["ORDER_FAILED"]}}, user=admin)
    assert changed["data"]["updateWebhookEndpoint"]["endpoint"]["events"] == ["ORDER_FAILED"]
    listed = (await gql(ENDPOINTS, user=admin))["data"]["webhookEndpoints"]
    assert listed == [
        {"id": endpoint["id"], "url": receiver.url, "events": ["ORDER_FAILED"], "enabled": True}
    ]
    empty = await gql(UPDATE, {"id": endpoint["id"], "input": {"events": []}}, user=admin)
    assert empty["data"]["updateWebhookEndpoint"] == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
    }
    gone = await gql(DELETE, {"id": endpoint["id"]}, user=admin)
    assert gone["data"]["deleteWebhookEndpoint"] == {
        "__typename": "DeleteWebhookEndpointSuccess",
        "id": endpoint["id"],
    }
    assert (await gql(ENDPOINTS, user=admin))["data"]["webhookEndpoints"] == []
    again = await gql(DELETE, {"id": endpoint["id"]}, user=admin)
    assert again["data"]["deleteWebhookEndpoint"] == {"__typename": "NotFoundError", "code": "NOT_FOUND"}

    entries = [
        (e.action, e.entity_id, e.old, e.new) for e in await audit(rt) if e.entity == "webhook_endpoint"
    ]
    view = {"url": receiver.url, "description": "billing", "enabled": True}
    assert entries == [
        ("webhook.create", endpoint["id"], None, {**view, "events": ["CARD_REDEEMED", "ORDER_ACTIVE"]}),
        (
            "webhook.update",
            endpoint["id"],
            {"events": ["CARD_REDEEMED", "ORDER_ACTIVE"]},
            {"events": ["ORDER_FAILED"]},
        ),
        ("webhook.delete", endpoint["id"], {**view, "events": ["ORDER_FAILED"]}, None),
    ]
    assert not any(made["secret"] in json.dumps([e.old, e.new]) for e in await audit(rt))


# ---------------------------------------------------------------- every event, documented


async def test_every_event_is_sent_with_its_documented_payload(gql, client, rt, admin, member, receiver):
    from services.provisioners import SimulatedProvisioner
    from services.provisioning_jobs import claim_job, run_job
    from tests.provisioning_helpers import RecordingNotifier, place_order, with_settings

    await make_endpoint(
        gql,
        admin,
        receiver,
        [
            "BATCH_CREATED",
            "BATCH_STATUS_CHANGED",
            "BATCH_DOWNLOADED",
            "CARD_STATUS_CHANGED",
            "ORDER_ACTIVE",
            "ORDER_FAILED",
            "ORDER_CANCELLED",
        ],
    )
    made = await create_batch(gql, admin, quantity=3)
    await download_codes(gql, client, admin, made["id"])
    await gql(
        "mutation ($id: ID!) { setCardBatchStatus(id: $id, status: DISABLED) { __typename } }",
        {"id": made["id"]},
        user=admin,
    )
    cards = await gql(
        "query ($id: ID!) { cardBatch(id: $id) { cards { nodes { id } } } }", {"id": made["id"]}, user=admin
    )
    first_card = cards["data"]["cardBatch"]["cards"]["nodes"][0]["id"]
    await gql(
        "mutation ($id: ID!) { setCardStatus(id: $id, status: DISABLED) { __typename } }",
        {"id": first_card},
        user=admin,
    )
    ranged = await gql(
        "mutation ($r: CardRange!) { setCardRangeStatus(range: $r, status: DISABLED) { __typename } }",
        {"r": {"batchId": made["id"], "fromSeq": 1, "toSeq": 3}},
        user=admin,
    )
    assert ranged["data"]["setCardRangeStatus"]["__typename"] == "SetCardRangeStatusSuccess", ranged
    # an order opened, one refused then cancelled
    await place_order(rt, member.id)
    job = await claim_job(rt, "w")
    assert job is not None
    await run_job(rt, SimulatedProvisioner(rt), RecordingNotifier(), job)
    refusing = with_settings(rt, simulated_failure="refuse")
    failed = await place_order(rt, member.id)
    job = await claim_job(rt, "w")
    assert job is not None
    await run_job(refusing, SimulatedProvisioner(refusing), RecordingNotifier(), job)
    cancelled = await gql(
        "mutation ($id: ID!) { cancelOrder(orderId: $id) { __typename } }",
        {"id": str(failed.order_id)},
        user=admin,
    )
    assert cancelled["data"]["cancelOrder"]["__typename"] == "CancelOrderSuccess", cancelled

    await deliver_due(rt)

    payloads = [r.payload for r in sorted(receiver.received, key=lambda r: r.payload["timestamp"])]
    for payload in payloads:
        validate(payload)
    assert all(r.verified_by == (0,) for r in receiver.received)
    types = sorted(p["type"] for p in payloads)
    assert types == sorted(
        ["batch.created"] * 3  # this test's batch and place_order's two
        + ["batch.downloaded", "batch.status_changed", "card.status_changed", "card.status_changed"]
        + ["order.active", "order.failed", "order.cancelled"]
    )
    single, ranged_event = [p["data"] for p in payloads if p["type"] == "card.status_changed"]
    assert (single["fromSeq"], single["toSeq"], single["changed"], single["card"]["id"]) == (
        1,
        1,
        1,
        first_card,
    )
    assert (
        ranged_event["fromSeq"],
        ranged_event["toSeq"],
        ranged_event["changed"],
        ranged_event["card"],
    ) == (
        1,
        3,
        2,
        None,
    )
    [downloaded] = [p["data"] for p in payloads if p["type"] == "batch.downloaded"]
    assert (downloaded["cardCount"], downloaded["admin"], downloaded["format"]) == (
        3,
        {"id": str(admin.id)},
        "TXT",
    )
    [active] = [p["data"] for p in payloads if p["type"] == "order.active"]
    assert active["order"]["status"] == "ACTIVE" and active["instance"]["ipAddress"]
    [failed_event] = [p["data"] for p in payloads if p["type"] == "order.failed"]
    assert failed_event["order"]["failureReason"]
    everything = " ".join(r.body.decode() for r in receiver.received)
    assert PHONE not in everything and "password" not in everything.lower()


# ---------------------------------------------------------------- secrets, logs, metrics


async def test_no_secret_reaches_a_payload_or_a_log_line(gql, client, rt, admin, member, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    _, secret = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    receiver.answers = ["500"]
    code, _ = await redeem_one(gql, client, admin, member)
    await deliver_due(rt)

    secrets_ = [secret, secret.removeprefix("whsec_"), code, code.replace("-", ""), PHONE]
    lines = [
        record.getMessage() + " " + json.dumps(record.__dict__, default=str) for record in caplog.records
    ]
    assert any("webhook" in line for line in lines)
    for line in lines:
        for value in secrets_:
            assert value not in line
    async with rt.db.read() as session:
        payloads = list(await session.scalars(select(WebhookMessage.payload)))
    assert payloads and not any(value in p for p in payloads for value in secrets_)


def sample(text: str, name: str, **labels: str) -> float:
    """A sample's value in a scrape (0 when absent: counters are per process, so tests compare)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


async def test_metrics_show_deliveries_by_outcome_and_endpoint_latency_and_backlog(
    gql, client, rt, clock, admin, member, receiver
):
    endpoint_id, _ = await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    receiver.answers = ["500"]
    await redeem_one(gql, client, admin, member)
    clock.set(rt.now())

    before = (await client.get("/metrics")).text
    await deliver_due(rt)
    retried = (await client.get("/metrics")).text
    clock.advance(seconds=5)
    assert await deliver_due(rt) == ["delivered"]
    delivered = (await client.get("/metrics")).text

    def grew(name: str, earlier: str, later: str, **labels: str) -> float:
        return sample(later, name, **labels) - sample(earlier, name, **labels)

    assert (sample(before, "tihuo_webhook_backlog"), sample(retried, "tihuo_webhook_backlog")) == (1, 1)
    assert sample(delivered, "tihuo_webhook_backlog") == 0
    assert sample(retried, "tihuo_webhook_oldest_pending_seconds") >= 0
    counted = "tihuo_webhook_deliveries_total"
    assert grew(counted, before, retried, endpoint=endpoint_id, outcome="retried") == 1
    assert grew(counted, retried, delivered, endpoint=endpoint_id, outcome="delivered") == 1
    assert grew("tihuo_webhook_delivery_seconds_count", before, delivered, endpoint=endpoint_id) == 2
    assert grew("tihuo_webhook_delivery_lag_seconds_count", before, delivered, endpoint=endpoint_id) == 1
    # the lag counts from the queueing: at least the 5 s the retry waited
    assert grew("tihuo_webhook_delivery_lag_seconds_sum", before, delivered, endpoint=endpoint_id) >= 5


async def test_a_duplicate_order_number_leaves_no_message_behind(gql, client, rt, admin, member, receiver):
    # the write is made again with another order number after a collision: one message in the end
    await make_endpoint(gql, admin, receiver, ["CARD_REDEEMED"])
    ids = await catalog_ids(gql, admin)
    made = await create_batch(
        gql, admin, quantity=2, config=virtual_host_config(ids["sh-bgp"], ids["vh-basic"])
    )
    first, second = await download_codes(gql, client, admin, made["id"])
    taken = await gql(REDEEM, {"input": {"code": first}}, user=member)
    order_no = taken["data"]["redeemCard"]["order"]["orderNo"]
    async with rt.db.read() as session:
        batch = await session.get(CardBatch, int(made["id"]))
        card_id = await session.scalar(select(Card.id).where(Card.batch_id == int(made["id"]), Card.seq == 2))
    assert batch is not None and card_id is not None
    write = late_write(
        rt, member, batch, card_id, key=None, request_hash=_request_hash(second, None), order_no=order_no
    )
    with pytest.raises(DuplicateKey):
        await rt.db.run_write(write.run)
    assert (await rows(rt, WebhookMessage), await rows(rt, WebhookDelivery)) == (1, 1)
