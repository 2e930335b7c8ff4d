"""validFrom and perMemberLimit in redemption (RULES-v2 §5): CARD_NOT_YET_VALID after CARD_USED and
before CARD_EXPIRED, MEMBER_LIMIT_REACHED last, both in preview and redeem, nothing changed on a
refusal; the limit decided inside the write, so concurrent redemptions by one member never pass it;
a cancelled order does not count; the per-day counts the redemption writes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import select, update

from models import BatchRedemptionDay, MemberBatchRedemptions, Order, OrderStatus, Role
from tests.api.test_redemption import PREVIEW, REDEEM, image_ids, redemption_state
from tests.conftest import make_user
from tests.factories import (
    CREATE_BATCH,
    batch_input,
    batch_row,
    cloud_server_config,
    create_batch,
    download_codes,
    line_id,
    snapshot,
)

# 2026-12-09 23:30 in Shanghai, 2026-12-10 00:30 the next hour
LATE_ON_THE_9TH = datetime(2026, 12, 9, 15, 30, tzinfo=UTC)
CANCEL = "mutation ($id: ID!) { cancelOrder(orderId: $id) { __typename ... on Error { code } } }"
BY_DAY = """query ($id: ID!, $from: Date!, $to: Date!) { cardBatch(id: $id) {
  usedCount redemptionsByDay(from: $from, to: $to) { day count } } }"""


async def _redeem(gql, member, code: str, os_id: str) -> dict:
    return (await gql(REDEEM, {"input": {"code": code, "osImageId": os_id}}, user=member))["data"][
        "redeemCard"
    ]


async def _preview(gql, member, code: str) -> dict:
    return (await gql(PREVIEW, {"code": code}, user=member))["data"]["redemptionPreview"]


async def test_before_valid_from_a_card_is_not_yet_valid_and_nothing_changes(
    gql, client, rt, clock, catalog, admin, member
):
    # given a batch valid from 2026-12-10, late on the 9th in Shanghai
    clock.set(LATE_ON_THE_9TH)
    batch = await create_batch(gql, admin, quantity=2, validFrom="2026-12-10", valid_until="2026-12-31")
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    before = await redemption_state(rt)

    # when the member previews and redeems
    preview = await gql(PREVIEW, {"code": codes[0]}, user=member, headers={"Accept-Language": "en"})
    redeemed = await _redeem(gql, member, codes[0], os_id)

    # then both answer CARD_NOT_YET_VALID, and nothing was written
    assert preview["data"]["redemptionPreview"] == {
        "__typename": "CardUnavailableError",
        "code": "CARD_NOT_YET_VALID",
    }
    assert redeemed == {"__typename": "CardUnavailableError", "code": "CARD_NOT_YET_VALID"}
    assert await redemption_state(rt) == before

    # and an hour later, on the 10th in Shanghai, the same card is redeemed
    clock.advance(hours=1)
    assert (await _redeem(gql, member, codes[0], os_id))["__typename"] == "RedeemCardSuccess"


async def test_not_yet_valid_comes_after_disabled_and_used(gql, client, rt, clock, catalog, admin, member):
    clock.set(LATE_ON_THE_9TH)
    batch = await create_batch(gql, admin, quantity=2, validFrom="2026-12-10", valid_until="2026-12-31")
    codes = await download_codes(gql, client, admin, batch["id"])
    rows = await snapshot(rt, batch["id"])
    first_card = rows["cards"][0][0]
    assert (
        await gql(
            "mutation ($id: ID!) { setCardStatus(id: $id, status: DISABLED) { __typename } }",
            {"id": str(first_card)},
            user=admin,
        )
    )["data"]["setCardStatus"] == {"__typename": "SetCardStatusSuccess"}

    assert (await _preview(gql, member, codes[0]))["code"] == "CARD_DISABLED"
    assert (await _preview(gql, member, codes[1]))["code"] == "CARD_NOT_YET_VALID"


async def test_valid_from_after_valid_until_or_a_limit_out_of_range_is_refused(gql, rt, catalog, admin):
    config = cloud_server_config(await line_id(gql, admin, "sh-bgp"))
    before = await snapshot(rt)
    cases = {
        "validFrom": {"validFrom": "2100-01-01"},
        "perMemberLimit": {"perMemberLimit": 0},
    }
    for field, extra in [*cases.items(), ("perMemberLimit", {"perMemberLimit": 1001})]:
        wanted = {**batch_input(config, valid_until="2099-12-31"), **extra}
        result = await gql(
            CREATE_BATCH.replace(
                "... on Error { code message }", "... on InvalidInputError { code fieldErrors { field } }"
            ),
            {"input": wanted},
            user=admin,
        )
        assert result["data"]["createCardBatch"] == {
            "__typename": "InvalidInputError",
            "code": "INVALID_INPUT",
            "fieldErrors": [{"field": field}],
        }, extra
    assert await snapshot(rt) == before


async def test_a_member_at_the_limit_is_refused_in_preview_and_redeem_and_another_is_not(
    gql, client, rt, catalog, admin, member
):
    # given a batch with a limit of 2, and a member who redeemed 2 of its cards
    batch = await create_batch(gql, admin, quantity=4, perMemberLimit=2)
    assert (
        await gql(
            "query ($id: ID!) { cardBatch(id: $id) { perMemberLimit validFrom } }",
            {"id": batch["id"]},
            user=admin,
        )
    )["data"]["cardBatch"] == {"perMemberLimit": 2, "validFrom": None}
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    for code in codes[:2]:
        assert (await _redeem(gql, member, code, os_id))["__typename"] == "RedeemCardSuccess"
    before = await redemption_state(rt)

    # when they try a third
    preview = await gql(PREVIEW, {"code": codes[2]}, user=member, headers={"Accept-Language": "en"})
    redeemed = await _redeem(gql, member, codes[2], os_id)

    # then both say MEMBER_LIMIT_REACHED and nothing changed
    assert preview["data"]["redemptionPreview"] == {
        "__typename": "CardUnavailableError",
        "code": "MEMBER_LIMIT_REACHED",
    }
    assert redeemed == {"__typename": "CardUnavailableError", "code": "MEMBER_LIMIT_REACHED"}
    assert await redemption_state(rt) == before
    # and another member may still redeem that card
    other = await make_user(rt, "other-member", Role.MEMBER)
    assert (await _redeem(gql, other, codes[2], os_id))["__typename"] == "RedeemCardSuccess"
    async with rt.db.read() as session:
        held = (
            await session.execute(
                select(
                    MemberBatchRedemptions.member_id,
                    MemberBatchRedemptions.live_count,
                    MemberBatchRedemptions.cap,
                ).order_by(MemberBatchRedemptions.member_id)
            )
        ).all()
    assert [tuple(row) for row in held] == [(member.id, 2, 2), (other.id, 1, 2)]


async def test_a_cancelled_order_does_not_count_against_the_limit(gql, client, rt, catalog, admin, member):
    batch = await create_batch(gql, admin, quantity=3, perMemberLimit=1)
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    order = (await _redeem(gql, member, codes[0], os_id))["order"]
    assert (await _redeem(gql, member, codes[1], os_id))["code"] == "MEMBER_LIMIT_REACHED"
    # the order failed to open, and an admin cancels it
    async with rt.db.write() as session:
        await session.execute(
            update(Order).where(Order.id == int(order["id"])).values(status=OrderStatus.FAILED)
        )
    cancelled = await gql(CANCEL, {"id": order["id"]}, user=admin)
    assert cancelled["data"]["cancelOrder"] == {"__typename": "CancelOrderSuccess"}

    assert (await _redeem(gql, member, codes[1], os_id))["__typename"] == "RedeemCardSuccess"
    assert (await _redeem(gql, member, codes[2], os_id))["code"] == "MEMBER_LIMIT_REACHED"


async def test_twenty_concurrent_redemptions_by_one_member_with_a_limit_of_3_make_exactly_3_orders(
    gql, client, rt, catalog, admin, member
):
    # given a batch of 20 cards with a limit of 3 per member
    batch = await create_batch(gql, admin, quantity=20, perMemberLimit=3)
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]

    # when one member redeems all twenty at once
    results = await asyncio.gather(*(_redeem(gql, member, code, os_id) for code in codes))

    # then exactly three succeed, the others are at the limit, and every counter agrees
    kinds = sorted((r["__typename"], r.get("code")) for r in results)
    assert (
        kinds == [("CardUnavailableError", "MEMBER_LIMIT_REACHED")] * 17 + [("RedeemCardSuccess", None)] * 3
    )
    state = await redemption_state(rt)
    assert (
        state["counts"]["orders"],
        state["counts"]["redemptions"],
        state["counts"]["provisioning_jobs"],
    ) == (3, 3, 3)
    assert sorted(status for _, status, _, _ in state["cards"]).count("USED") == 3
    assert (await batch_row(rt, batch["id"])).used_count == 3
    async with rt.db.read() as session:
        held = (await session.execute(select(MemberBatchRedemptions.live_count))).scalars().all()
    assert held == [3]


async def test_redemptions_are_counted_by_day_in_shanghai_and_a_cancellation_takes_its_day_back(
    gql, client, rt, clock, catalog, admin, member
):
    clock.set(LATE_ON_THE_9TH)
    batch = await create_batch(gql, admin, quantity=4)
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    first = (await _redeem(gql, member, codes[0], os_id))["order"]
    clock.advance(hours=1)  # the 10th in Shanghai, still the 9th in UTC
    for code in codes[1:3]:
        assert (await _redeem(gql, member, code, os_id))["__typename"] == "RedeemCardSuccess"
    window = {"id": batch["id"], "from": "2026-12-08", "to": "2026-12-11"}

    result = (await gql(BY_DAY, window, user=admin))["data"]["cardBatch"]

    assert result == {
        "usedCount": 3,
        "redemptionsByDay": [
            {"day": "2026-12-08", "count": 0},
            {"day": "2026-12-09", "count": 1},
            {"day": "2026-12-10", "count": 2},
            {"day": "2026-12-11", "count": 0},
        ],
    }
    async with rt.db.write() as session:
        await session.execute(
            update(Order).where(Order.id == int(first["id"])).values(status=OrderStatus.FAILED)
        )
    assert (await gql(CANCEL, {"id": first["id"]}, user=admin))["data"]["cancelOrder"][
        "__typename"
    ] == "CancelOrderSuccess"
    after = (await gql(BY_DAY, window, user=admin))["data"]["cardBatch"]
    assert after["usedCount"] == 2
    assert [d["count"] for d in after["redemptionsByDay"]] == [0, 0, 2, 0]
    stats = (
        await gql(
            'query { cardProgrammeStats { redeemedValue(from: "2026-12-09", to: "2026-12-10")'
            ' redemptionsByDay(from: "2026-12-09", to: "2026-12-10") { day count } } }',
            user=admin,
        )
    )["data"]["cardProgrammeStats"]
    assert stats == {
        "redeemedValue": "167.32",
        "redemptionsByDay": [{"day": "2026-12-09", "count": 0}, {"day": "2026-12-10", "count": 2}],
    }
    async with rt.db.read() as session:
        rows = (
            await session.execute(
                select(BatchRedemptionDay.day, BatchRedemptionDay.redeemed).order_by(BatchRedemptionDay.day)
            )
        ).all()
    assert [(d.isoformat(), n) for d, n in rows] == [("2026-12-09", 0), ("2026-12-10", 2)]
