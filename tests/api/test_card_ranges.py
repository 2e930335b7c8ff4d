"""Work on ranges of cards and channels (RULES-v2 §5): setCardRangeStatus and assignCardsToChannel
touch only cards that change (used ones are left alone and not counted), keep the batch's and the
channels' counters exact and write one audit entry each; channels, their counts, a card's channel,
batches filtered by channel; extendCardBatch. Every refusal changes nothing."""

from __future__ import annotations

from typing import Any

from tests.api.test_redemption import REDEEM, image_ids
from tests.factories import audit_rows, card_rows, create_batch, download_codes, snapshot

SET_RANGE = """mutation ($range: CardRange!, $status: CardStatus!) { setCardRangeStatus(range: $range, status: $status) {
  __typename ... on SetCardRangeStatusSuccess { changed batch { usedCount disabledCount unusedCount } }
  ... on InvalidInputError { code fieldErrors { field } } ... on Error { code } } }"""
ASSIGN = """mutation ($range: CardRange!, $channel: ID) { assignCardsToChannel(range: $range, channelId: $channel) {
  __typename ... on AssignCardsSuccess { assigned channel { name cardCount usedCount } }
  ... on InvalidInputError { code fieldErrors { field } } ... on Error { code } } }"""
CREATE_CHANNEL = """mutation ($name: String!, $remark: String) { createChannel(name: $name, remark: $remark) {
  __typename ... on ChannelSuccess { channel { id name remark cardCount usedCount } }
  ... on InvalidInputError { code fieldErrors { field } } } }"""
UPDATE_CHANNEL = """mutation ($id: ID!, $name: String, $remark: String) { updateChannel(id: $id, name: $name, remark: $remark) {
  __typename ... on ChannelSuccess { channel { id name remark } }
  ... on InvalidInputError { code fieldErrors { field } } ... on Error { code } } }"""
SHARES = """query ($id: ID!) { cardBatch(id: $id) { usedCount
  channels { channel { name } cardCount usedCount }
  cards(first: 100) { nodes { seq status channel { name } } } } }"""
CHANNELS = "query { channels { name remark cardCount usedCount } }"
BY_CHANNEL = "query ($c: ID!) { cardBatches(filter: {channelId: $c}) { totalCount nodes { id } } }"
EXTEND = """mutation ($id: ID!, $until: Date!) { extendCardBatch(id: $id, validUntil: $until) {
  __typename ... on ExtendCardBatchSuccess { batch { validUntil } }
  ... on InvalidInputError { code fieldErrors { field } } ... on Error { code } } }"""


def _range(batch: dict[str, Any], first: int, last: int) -> dict[str, Any]:
    return {"batchId": batch["id"], "fromSeq": first, "toSeq": last}


async def _batch_with_a_used_card(gql, client, admin, member, *, quantity: int = 10, used_seq: int = 3):
    batch = await create_batch(gql, admin, quantity=quantity)
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    redeemed = await gql(REDEEM, {"input": {"code": codes[used_seq - 1], "osImageId": os_id}}, user=member)
    assert redeemed["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess"
    return batch, codes, os_id


async def _channel(gql, admin, name: str) -> str:
    made = (await gql(CREATE_CHANNEL, {"name": name}, user=admin))["data"]["createChannel"]
    assert made["__typename"] == "ChannelSuccess", made
    return made["channel"]["id"]


async def test_a_range_is_disabled_and_enabled_leaving_the_used_card_alone(
    gql, client, rt, catalog, admin, member
):
    # given 10 cards, seq 3 used
    batch, _, _ = await _batch_with_a_used_card(gql, client, admin, member)

    # when seq 2..8 are disabled
    result = (await gql(SET_RANGE, {"range": _range(batch, 2, 8), "status": "DISABLED"}, user=admin))["data"]

    # then 6 changed (seq 3 is used: left as it is, not counted), and the counters agree
    assert result["setCardRangeStatus"] == {
        "__typename": "SetCardRangeStatusSuccess",
        "changed": 6,
        "batch": {"usedCount": 1, "disabledCount": 6, "unusedCount": 3},
    }
    assert [card.status.value for card in await card_rows(rt, batch["id"])] == [
        "UNUSED", "DISABLED", "USED", "DISABLED", "DISABLED", "DISABLED", "DISABLED", "DISABLED", "UNUSED", "UNUSED",
    ]  # fmt: skip
    [entry] = await audit_rows(rt, "card.set_range_status")
    assert (entry.entity, entry.entity_id, entry.actor_id) == ("batch", batch["id"], admin.id)
    assert (entry.old, entry.new) == (
        {"status": "UNUSED"},
        {"fromSeq": 2, "toSeq": 8, "status": "DISABLED", "changed": 6},
    )

    # when the whole batch is enabled again, only the 6 disabled cards change
    again = (await gql(SET_RANGE, {"range": _range(batch, 1, 10), "status": "UNUSED"}, user=admin))["data"]
    assert again["setCardRangeStatus"]["changed"] == 6
    assert again["setCardRangeStatus"]["batch"] == {"usedCount": 1, "disabledCount": 0, "unusedCount": 9}
    assert len(await audit_rows(rt, "card.set_range_status")) == 2


async def test_a_bad_range_or_status_or_batch_is_refused_and_changes_nothing(
    gql, client, rt, catalog, admin, member
):
    batch, _, _ = await _batch_with_a_used_card(gql, client, admin, member, quantity=5)
    channel = await _channel(gql, admin, "Reseller A")
    before = await snapshot(rt, batch["id"])
    refused = [
        (
            SET_RANGE,
            {"range": _range(batch, 0, 3), "status": "DISABLED"},
            "setCardRangeStatus",
            ["range.fromSeq"],
        ),
        (
            SET_RANGE,
            {"range": _range(batch, 4, 3), "status": "DISABLED"},
            "setCardRangeStatus",
            ["range.toSeq"],
        ),
        (
            SET_RANGE,
            {"range": _range(batch, 1, 6), "status": "DISABLED"},
            "setCardRangeStatus",
            ["range.toSeq"],
        ),
        (SET_RANGE, {"range": _range(batch, 1, 5), "status": "USED"}, "setCardRangeStatus", ["status"]),
        (ASSIGN, {"range": _range(batch, 1, 6), "channel": channel}, "assignCardsToChannel", ["range.toSeq"]),
    ]
    for query, variables, field, fields in refused:
        answer = (await gql(query, variables, user=admin))["data"][field]
        assert answer == {
            "__typename": "InvalidInputError",
            "code": "INVALID_INPUT",
            "fieldErrors": [{"field": name} for name in fields],
        }, variables
    missing = {"batchId": "999999", "fromSeq": 1, "toSeq": 1}
    for query, variables, field in [
        (SET_RANGE, {"range": missing, "status": "DISABLED"}, "setCardRangeStatus"),
        (ASSIGN, {"range": missing, "channel": channel}, "assignCardsToChannel"),
        (ASSIGN, {"range": _range(batch, 1, 5), "channel": "999999"}, "assignCardsToChannel"),
    ]:
        assert (await gql(query, variables, user=admin))["data"][field] == {
            "__typename": "NotFoundError",
            "code": "NOT_FOUND",
        }
    assert await snapshot(rt, batch["id"]) == before


async def test_cards_are_handed_to_channels_and_every_count_follows(gql, client, rt, catalog, admin, member):
    # given 10 cards (seq 3 used) and two channels
    batch, codes, os_id = await _batch_with_a_used_card(gql, client, admin, member)
    reseller, campaign = (
        await _channel(gql, admin, "Reseller A"),
        await _channel(gql, admin, "Spring campaign"),
    )

    # when 1..6 go to the reseller, then 4..10 to the campaign
    first = (await gql(ASSIGN, {"range": _range(batch, 1, 6), "channel": reseller}, user=admin))["data"]
    second = (await gql(ASSIGN, {"range": _range(batch, 4, 10), "channel": campaign}, user=admin))["data"]

    # then the used card stayed out of both, and each count says so
    assert first["assignCardsToChannel"] == {
        "__typename": "AssignCardsSuccess",
        "assigned": 5,
        "channel": {"name": "Reseller A", "cardCount": 5, "usedCount": 0},
    }
    assert second["assignCardsToChannel"] == {
        "__typename": "AssignCardsSuccess",
        "assigned": 7,
        "channel": {"name": "Spring campaign", "cardCount": 7, "usedCount": 0},
    }
    entries = await audit_rows(rt, "card.assign_channel")
    assert [(e.old, e.new) for e in entries] == [
        ({"channels": {"none": 5}}, {"fromSeq": 1, "toSeq": 6, "channelId": reseller, "assigned": 5}),
        (
            {"channels": {"none": 4, reseller: 3}},
            {"fromSeq": 4, "toSeq": 10, "channelId": campaign, "assigned": 7},
        ),
    ]

    # when a campaign card is redeemed
    assert (await gql(REDEEM, {"input": {"code": codes[7], "osImageId": os_id}}, user=member))["data"][
        "redeemCard"
    ]["__typename"] == "RedeemCardSuccess"

    # then the batch's shares, the cards' channels and the channel list agree
    shares = (await gql(SHARES, {"id": batch["id"]}, user=admin))["data"]["cardBatch"]
    assert shares["usedCount"] == 2
    assert shares["channels"] == [
        {"channel": {"name": "Reseller A"}, "cardCount": 2, "usedCount": 0},
        {"channel": {"name": "Spring campaign"}, "cardCount": 7, "usedCount": 1},
        {"channel": None, "cardCount": 1, "usedCount": 1},
    ]
    assert [(c["seq"], c["channel"] and c["channel"]["name"]) for c in shares["cards"]["nodes"]] == [
        (1, "Reseller A"), (2, "Reseller A"), (3, None), (4, "Spring campaign"), (5, "Spring campaign"),
        (6, "Spring campaign"), (7, "Spring campaign"), (8, "Spring campaign"), (9, "Spring campaign"),
        (10, "Spring campaign"),
    ]  # fmt: skip
    assert (await gql(CHANNELS, user=admin))["data"]["channels"] == [
        {"name": "Reseller A", "remark": None, "cardCount": 2, "usedCount": 0},
        {"name": "Spring campaign", "remark": None, "cardCount": 7, "usedCount": 1},
    ]
    other = await create_batch(gql, admin, quantity=2)
    assert (await gql(BY_CHANNEL, {"c": campaign}, user=admin))["data"]["cardBatches"] == {
        "totalCount": 1,
        "nodes": [{"id": batch["id"]}],
    }
    assert other["id"] != batch["id"]

    # when the whole batch is taken out of every channel, the used campaign card keeps its channel
    out = (await gql(ASSIGN, {"range": _range(batch, 1, 10), "channel": None}, user=admin))["data"]
    assert out["assignCardsToChannel"] == {"__typename": "AssignCardsSuccess", "assigned": 8, "channel": None}
    shares = (await gql(SHARES, {"id": batch["id"]}, user=admin))["data"]["cardBatch"]["channels"]
    assert shares == [
        {"channel": {"name": "Spring campaign"}, "cardCount": 1, "usedCount": 1},
        {"channel": None, "cardCount": 9, "usedCount": 1},
    ]
    assert (await gql(BY_CHANNEL, {"c": reseller}, user=admin))["data"]["cardBatches"]["totalCount"] == 0


async def test_channels_are_named_once_renamed_and_audited(gql, rt, admin):
    made = (await gql(CREATE_CHANNEL, {"name": "  Taobao shop ", "remark": "店铺"}, user=admin))["data"][
        "createChannel"
    ]
    assert made["channel"]["name"] == "Taobao shop" and made["channel"]["remark"] == "店铺"
    channel = made["channel"]["id"]
    before = await snapshot(rt)
    assert (await gql(CREATE_CHANNEL, {"name": "Taobao shop"}, user=admin))["data"]["createChannel"] == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
        "fieldErrors": [{"field": "name"}],
    }
    assert (await gql(CREATE_CHANNEL, {"name": " "}, user=admin))["data"]["createChannel"]["fieldErrors"] == [
        {"field": "name"}
    ]
    assert (await gql(UPDATE_CHANNEL, {"id": "999999", "name": "x"}, user=admin))["data"][
        "updateChannel"
    ] == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
    }
    assert await snapshot(rt) == before

    renamed = await gql(UPDATE_CHANNEL, {"id": channel, "name": "JD shop", "remark": ""}, user=admin)

    assert renamed["data"]["updateChannel"] == {
        "__typename": "ChannelSuccess",
        "channel": {"id": channel, "name": "JD shop", "remark": None},
    }
    assert [(e.action, e.entity_id, e.old, e.new) for e in await audit_rows(rt) if e.entity == "channel"] == [
        ("channel.create", channel, None, {"name": "Taobao shop", "remark": "店铺"}),
        (
            "channel.update",
            channel,
            {"name": "Taobao shop", "remark": "店铺"},
            {"name": "JD shop", "remark": None},
        ),
    ]


async def test_extending_a_batch_moves_its_last_day_and_nothing_else(
    gql, client, rt, clock, catalog, admin, member
):
    batch, _, _ = await _batch_with_a_used_card(gql, client, admin, member, quantity=3, used_seq=1)
    before = await snapshot(rt, batch["id"])

    extended = await gql(EXTEND, {"id": batch["id"], "until": "2100-06-30"}, user=admin)

    assert extended["data"]["extendCardBatch"] == {
        "__typename": "ExtendCardBatchSuccess",
        "batch": {"validUntil": "2100-06-30"},
    }
    after = await snapshot(rt, batch["id"])
    assert after["cards"] == before["cards"] and after["batch"] == before["batch"]
    [entry] = await audit_rows(rt, "batch.extend")
    assert (entry.old, entry.new) == ({"validUntil": "2099-12-31"}, {"validUntil": "2100-06-30"})

    kept = await snapshot(rt, batch["id"])
    assert (await gql(EXTEND, {"id": batch["id"], "until": "2000-01-01"}, user=admin))["data"][
        "extendCardBatch"
    ] == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
        "fieldErrors": [{"field": "validUntil"}],
    }
    assert (await gql(EXTEND, {"id": "999999", "until": "2100-01-01"}, user=admin))["data"][
        "extendCardBatch"
    ] == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
    }
    later = await create_batch(gql, admin, quantity=1, validFrom="2099-06-01")
    assert (await gql(EXTEND, {"id": later["id"], "until": "2099-05-31"}, user=admin))["data"][
        "extendCardBatch"
    ]["fieldErrors"] == [{"field": "validUntil"}]
    assert (await snapshot(rt, batch["id"]))["cards"] == kept["cards"]
