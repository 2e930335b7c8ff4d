"""What a member may read of their own cards and batches (issue 9, item 6): the card's masked code,
status and times, the batch's name and configuration; nothing an admin wrote (a remark, a batch
number, a status) and no counts. Admins read all of it."""

from __future__ import annotations

import pytest

from tests.factories import create_batch, download_codes

IMAGE = "query { regions { lines { code osImages { id name } } } }"
REDEEM = """mutation ($code: String!, $os: ID) { redeemCard(input: {code: $code, osImageId: $os}) {
  ... on RedeemCardSuccess { order { id } } ... on Error { code } } }"""
MINE = """query ($id: ID!) { order(id: $id) { orderNo card { maskedCode status usedAt expired
  batch { id name productType validUntil config { summary } } } } }"""
REMARK = "query ($id: ID!) { order(id: $id) { card { remark } } }"
ADMIN_FIELDS = [
    "batchNo",
    "referencePrice",
    "quantity",
    "usedCount",
    "disabledCount",
    "status",
    "downloadCount",
]
SET_REMARK = 'mutation ($id: ID!) { setCardRemark(id: $id, remark: "resold by Wang") { __typename } }'
CARD_ID = "query ($id: ID!) { order(id: $id) { card { id } } }"


@pytest.fixture
async def redeemed(gql, client, catalog, admin, member):
    batch = await create_batch(gql, admin, quantity=1)
    [code] = await download_codes(gql, client, admin, batch["id"])
    images = await gql(IMAGE, user=member)
    [os_id] = [
        image["id"]
        for region in images["data"]["regions"]
        for line in region["lines"]
        if line["code"] == "sh-bgp"
        for image in line["osImages"]
        if image["name"] == "Ubuntu 22.04 x64"
    ]
    order = (await gql(REDEEM, {"code": code, "os": os_id}, user=member))["data"]["redeemCard"]["order"]
    card_id = (await gql(CARD_ID, {"id": order["id"]}, user=admin))["data"]["order"]["card"]["id"]
    assert (await gql(SET_REMARK, {"id": card_id}, user=admin))["data"]["setCardRemark"] == {
        "__typename": "SetCardRemarkSuccess"
    }
    return order["id"], batch


async def test_a_member_reads_their_card_and_its_batch_name_and_config(gql, admin, member, redeemed):
    order_id, batch = redeemed

    result = await gql(MINE, {"id": order_id}, user=member)

    assert "errors" not in result, result
    card = result["data"]["order"]["card"]
    assert card["status"] == "USED" and card["maskedCode"].startswith("****-****-****-")
    assert card["batch"]["name"] == batch["name"] and card["batch"]["config"]["summary"]


async def test_a_member_cannot_read_the_admins_remark(gql, admin, member, redeemed):
    order_id, _ = redeemed

    as_member = await gql(REMARK, {"id": order_id}, user=member)
    as_admin = await gql(REMARK, {"id": order_id}, user=admin)

    assert as_member["data"] == {"order": {"card": {"remark": None}}}
    assert [(e["path"], e["extensions"]["code"]) for e in as_member["errors"]] == [
        (["order", "card", "remark"], "FORBIDDEN")
    ]
    assert as_admin == {"data": {"order": {"card": {"remark": "resold by Wang"}}}}


@pytest.mark.parametrize("field", ADMIN_FIELDS)
async def test_a_member_cannot_read_the_batchs_counts_or_admin_fields(gql, admin, member, redeemed, field):
    order_id, _ = redeemed
    query = f"query ($id: ID!) {{ order(id: $id) {{ orderNo card {{ batch {{ {field} }} }} }} }}"

    as_member = await gql(query, {"id": order_id}, user=member)
    as_admin = await gql(query, {"id": order_id}, user=admin)

    # the field is non-null, so the refusal takes the nearest nullable parent (the order) with it
    assert as_member["data"] == {"order": None}
    assert [(e["path"], e["extensions"]["code"]) for e in as_member["errors"]] == [
        (["order", "card", "batch", field], "FORBIDDEN")
    ]
    assert "errors" not in as_admin and as_admin["data"]["order"]["card"]["batch"][field] is not None


async def test_a_member_cannot_list_a_batchs_cards_through_their_own(gql, member, redeemed):
    order_id, _ = redeemed
    query = "query ($id: ID!) { order(id: $id) { card { batch { cards { totalCount } } } } }"

    result = await gql(query, {"id": order_id}, user=member)

    assert result["data"] == {"order": None}
    assert [e["extensions"]["code"] for e in result["errors"]] == ["FORBIDDEN"]
