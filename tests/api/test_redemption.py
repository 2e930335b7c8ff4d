"""Redeeming cards through the API (F8, RULES §4): the preview, the checks in their order with
nothing changed after each refusal, concurrency, idempotency keys and the failed-attempt limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from models import (
    Card,
    CardBatch,
    CardStatus,
    IdempotencyKey,
    JobStatus,
    Order,
    ProductModel,
    ProvisioningJob,
    Redemption,
    Role,
)
from services import codes, redemption, redemption_store
from services.errors import IdempotencyConflict, OutOfStock
from services.login_passwords import draw_password
from tests.conftest import make_user
from tests.factories import (
    bare_metal_config,
    batch_row,
    catalog_ids,
    cloud_server_config,
    create_batch,
    download_codes,
    virtual_host_config,
)

PREVIEW = """
query ($code: String!) { redemptionPreview(code: $code) {
  __typename
  ... on RedemptionPreview { productType productName quantity months osRequired validUntil notices
    config { summary lineName } osImages { name family } }
  ... on RateLimitedError { code retryAfterSeconds }
  ... on Error { code } } }
"""
REDEEM = """
mutation ($input: RedeemCardInput!) { redeemCard(input: $input) {
  __typename
  ... on RedeemCardSuccess { order { id orderNo memberId productType status listPrice
    osImage { name } card { maskedCode status memberId } instance { id } } }
  ... on RateLimitedError { code retryAfterSeconds }
  ... on Error { code } } }
"""
IMAGES = "query { regions { lines { code osImages { id name } } } }"


async def image_ids(gql, user) -> dict[tuple[str, str], str]:
    """(line code, image name) -> image id."""
    result = await gql(IMAGES, user=user)
    return {
        (line["code"], image["name"]): image["id"]
        for region in result["data"]["regions"]
        for line in region["lines"]
        for image in line["osImages"]
    }


async def one_card(gql, client, admin, **batch: Any) -> tuple[dict[str, Any], str]:
    made = await create_batch(gql, admin, quantity=1, **batch)
    [code] = await download_codes(gql, client, admin, made["id"])
    return made, code


def late_write(
    rt, member, batch: CardBatch, card_id: int, *, key: str | None, request_hash: bytes, order_no: str
):
    """The write of a redemption whose look-up passed a while ago: what a race looks like to the
    request that loses it, made to happen in a given order."""
    return redemption_store.Write(
        now=rt.now(),
        today=rt.today(),
        member_id=member.id,
        card_id=card_id,
        batch=batch,
        image=None,
        key=key,
        request_hash=request_hash,
        order_no=order_no,
        password=rt.password_keys.seal(draw_password(), order_no),
    )


async def redemption_state(rt) -> dict[str, Any]:
    """Everything a refused redemption must leave as it was."""
    async with rt.db.read() as session:
        counts = {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model))
            for model in (Order, Redemption, ProvisioningJob, IdempotencyKey)
        }
        cards = (await session.execute(select(Card.id, Card.status, Card.used_at, Card.member_id))).all()
        used = (await session.execute(select(CardBatch.id, CardBatch.used_count))).all()
        stock = (await session.execute(select(ProductModel.id, ProductModel.stock))).all()
    return {"counts": counts, "cards": cards, "used": used, "stock": stock}


async def test_preview_shows_what_a_cloud_server_card_gives(gql, client, admin, member, catalog):
    _, code = await one_card(gql, client, admin)

    result = await gql(PREVIEW, {"code": code}, user=member)

    assert result["data"]["redemptionPreview"] == {
        "__typename": "RedemptionPreview",
        "productType": "CLOUD_SERVER",
        "productName": "云服务器",
        "quantity": 1,
        "months": 1,
        "osRequired": True,
        "validUntil": "2099-12-31",
        "notices": [
            "服务器IP及登录密码将在产品开通后短信发送到您的手机。",
            "产品开通后不可退回，且提货卡使用后作废！",
        ],
        "config": {
            "summary": "1 核 · 1 GB 内存 · 10 GB 磁盘 · 10 Mbps · 防御 0 Gbps",
            "lineName": "上海 BGP",
        },
        "osImages": [
            {"name": "CentOS 7.9 x64", "family": "LINUX"},
            {"name": "Ubuntu 22.04 x64", "family": "LINUX"},
            {"name": "Windows Server 2019 x64", "family": "WINDOWS"},
        ],
    }


async def test_preview_of_a_virtual_host_needs_no_os(gql, client, admin, member, catalog):
    ids = await catalog_ids(gql, admin)
    _, code = await one_card(gql, client, admin, config=virtual_host_config(ids["sh-bgp"], ids["vh-basic"]))

    preview = (await gql(PREVIEW, {"code": code}, user=member))["data"]["redemptionPreview"]

    assert (preview["productName"], preview["osRequired"], preview["osImages"]) == ("云虚拟主机", False, [])
    assert preview["notices"][0] == "登录信息将在产品开通后短信发送到您的手机。"


async def test_redeeming_claims_the_card_and_places_a_pending_order(gql, client, rt, admin, member, catalog):
    made, code = await one_card(gql, client, admin)
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    typed = code.lower().replace("-", " ")

    result = await gql(REDEEM, {"input": {"code": typed, "osImageId": centos}}, user=member)

    order = result["data"]["redeemCard"]["order"]
    assert result["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess"
    assert order["memberId"] == str(member.id)
    assert (order["productType"], order["status"], order["listPrice"]) == ("CLOUD_SERVER", "PENDING", "83.66")
    assert order["osImage"] == {"name": "CentOS 7.9 x64"}
    assert order["card"] == {
        "maskedCode": f"****-****-****-{code[-4:]}",
        "status": "USED",
        "memberId": str(member.id),
    }
    assert order["instance"] is None
    assert (await batch_row(rt, made["id"])).used_count == 1
    async with rt.db.read() as session:
        redemption = await session.scalar(select(Redemption))
        job = await session.scalar(select(ProvisioningJob))
    assert (redemption.member_id, redemption.order_id, redemption.card_name) == (
        member.id,
        int(order["id"]),
        "测试提货卡",
    )
    assert (job.order_id, job.status, job.attempts) == (int(order["id"]), JobStatus.QUEUED, 0)


async def test_a_windows_pick_lists_the_windows_price_and_costs_the_member_nothing(
    gql, client, admin, member, catalog
):
    ids = await catalog_ids(gql, admin)
    config = cloud_server_config(ids["hk-cn2"], cpu_cores=2, memory_gb=2, disk_gb=40, bandwidth_mbps=5)
    made, code = await one_card(gql, client, admin, config=config)
    windows = (await image_ids(gql, member))[("hk-cn2", "Windows Server 2019 x64")]

    result = await gql(REDEEM, {"input": {"code": code, "osImageId": windows}}, user=member)

    assert made["referencePrice"] == "301.00"
    assert result["data"]["redeemCard"]["order"]["listPrice"] == "331.00"


async def test_a_malformed_code_is_refused_without_counting_as_a_failed_attempt(
    gql, client, rt, admin, member, catalog
):
    _, code = await one_card(gql, client, admin)
    wrong_check = code[:-1] + ("0" if code[-1] != "0" else "1")
    before = await redemption_state(rt)

    for typed in [wrong_check, "SHORT", code + "X", "7K3Q-Z9M2-XW4R-T8HU"] * 3:
        result = await gql(PREVIEW, {"code": typed}, user=member)
        assert result["data"]["redemptionPreview"] == {"__typename": "CardCodeError", "code": "INVALID_CODE"}

    assert await redemption_state(rt) == before
    ok = await gql(PREVIEW, {"code": code}, user=member)
    assert ok["data"]["redemptionPreview"]["__typename"] == "RedemptionPreview"


async def test_five_unknown_codes_lock_the_member_out_even_for_a_good_code(
    gql, client, rt, admin, member, catalog
):
    _, code = await one_card(gql, client, admin)
    unknown = [codes.generate() for _ in range(5)]

    answers = [
        (await gql(PREVIEW, {"code": typed}, user=member))["data"]["redemptionPreview"] for typed in unknown
    ]
    locked = await gql(REDEEM, {"input": {"code": code}}, user=member)

    assert answers == [{"__typename": "CardCodeError", "code": "CARD_NOT_FOUND"}] * 5
    assert locked["data"]["redeemCard"] == {
        "__typename": "RateLimitedError",
        "code": "RATE_LIMITED",
        "retryAfterSeconds": rt.settings.failed_attempt_window_seconds,
    }


async def test_a_request_packed_with_aliases_counts_every_attempt(gql, client, rt, admin, member, catalog):
    _, code = await one_card(gql, client, admin)
    aliases = " ".join(
        f'a{i}: redemptionPreview(code: "{codes.generate()}") {{ __typename ... on Error {{ code }} }}'
        for i in range(12)
    )

    result = await gql(f"query {{ {aliases} }}", user=member)

    answers = sorted(value["code"] for value in result["data"].values())
    assert answers == ["CARD_NOT_FOUND"] * 5 + ["RATE_LIMITED"] * 7
    after = await gql(PREVIEW, {"code": code}, user=member)
    assert after["data"]["redemptionPreview"]["code"] == "RATE_LIMITED"


async def test_the_client_address_is_limited_across_members(gql, client, rt, admin, catalog):
    _, code = await one_card(gql, client, admin)
    members = [await make_user(rt, f"member{i}", Role.MEMBER) for i in range(6)]
    for index in range(5):
        await gql(PREVIEW, {"code": codes.generate()}, user=members[index])

    result = await gql(PREVIEW, {"code": code}, user=members[5])

    assert result["data"]["redemptionPreview"]["code"] == "RATE_LIMITED"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("batch and card disabled", "BATCH_DISABLED"),
        ("card disabled", "CARD_DISABLED"),
        ("card used, no os", "CARD_USED"),
        ("expired", "CARD_EXPIRED"),
    ],
)
async def test_unavailable_cards_are_refused_in_order_and_nothing_changes(
    setup, expected, gql, client, rt, clock, admin, member, catalog
):
    made, code = await one_card(gql, client, admin, valid_until="2026-12-31")
    card_id = (
        await gql("query($id: ID!){cardBatch(id:$id){cards{nodes{id}}}}", {"id": made["id"]}, user=admin)
    )["data"]["cardBatch"]["cards"]["nodes"][0]["id"]
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    if "disabled" in setup:
        await gql(
            "mutation($id: ID!){setCardStatus(id:$id, status: DISABLED){__typename}}",
            {"id": card_id},
            user=admin,
        )
    if setup.startswith("batch"):
        await gql(
            "mutation($id: ID!){setCardBatchStatus(id:$id, status: DISABLED){__typename}}",
            {"id": made["id"]},
            user=admin,
        )
    if setup.startswith("card used"):
        other = await make_user(rt, "first", Role.MEMBER)
        await gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=other)
    if setup == "expired":
        clock.set(datetime(2026, 12, 31, 16, 0, 0, tzinfo=UTC))  # 2027-01-01 00:00 in Shanghai
    before = await redemption_state(rt)
    os_choice = None if setup == "card used, no os" else centos

    preview = await gql(PREVIEW, {"code": code}, user=member)
    redeem = await gql(REDEEM, {"input": {"code": code, "osImageId": os_choice}}, user=member)

    assert preview["data"]["redemptionPreview"] == {"__typename": "CardUnavailableError", "code": expected}
    assert redeem["data"]["redeemCard"] == {"__typename": "CardUnavailableError", "code": expected}
    assert await redemption_state(rt) == before


async def test_a_card_is_good_until_the_end_of_its_day_in_shanghai(
    gql, client, clock, admin, member, catalog
):
    _, code = await one_card(gql, client, admin, valid_until="2026-12-31")
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    clock.set(datetime(2026, 12, 31, 15, 59, 59, tzinfo=UTC))  # 23:59:59 in Shanghai

    result = await gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=member)

    assert result["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess"


async def test_os_choice_is_checked_against_the_cards_line(gql, client, rt, admin, member, catalog):
    ids = await catalog_ids(gql, admin)
    images = await image_ids(gql, member)
    _, cloud = await one_card(
        gql, client, admin, config=cloud_server_config(ids["hk-cn2"], disk_gb=20, bandwidth_mbps=5)
    )
    _, host = await one_card(gql, client, admin, config=virtual_host_config(ids["sh-bgp"], ids["vh-basic"]))
    before = await redemption_state(rt)

    missing = await gql(REDEEM, {"input": {"code": cloud}}, user=member)
    other_line = await gql(
        REDEEM, {"input": {"code": cloud, "osImageId": images[("sh-bgp", "CentOS 7.9 x64")]}}, user=member
    )
    nonsense = await gql(REDEEM, {"input": {"code": cloud, "osImageId": "x1"}}, user=member)
    on_host = await gql(
        REDEEM, {"input": {"code": host, "osImageId": images[("sh-bgp", "CentOS 7.9 x64")]}}, user=member
    )

    assert missing["data"]["redeemCard"] == {"__typename": "OsSelectionError", "code": "OS_REQUIRED"}
    assert other_line["data"]["redeemCard"] == {"__typename": "OsSelectionError", "code": "OS_NOT_ALLOWED"}
    assert nonsense["data"]["redeemCard"] == {"__typename": "OsSelectionError", "code": "OS_NOT_ALLOWED"}
    assert on_host["data"]["redeemCard"] == {"__typename": "OsSelectionError", "code": "OS_NOT_ALLOWED"}
    assert await redemption_state(rt) == before
    host_ok = await gql(REDEEM, {"input": {"code": host}}, user=member)
    assert host_ok["data"]["redeemCard"]["order"]["listPrice"] == "15.00"


async def test_bare_metal_takes_stock_and_refuses_without_it(gql, client, rt, admin, member, catalog):
    ids = await catalog_ids(gql, admin)
    _, first = await one_card(gql, client, admin, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"]))
    _, second = await one_card(gql, client, admin, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"]))
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]

    ok = await gql(REDEEM, {"input": {"code": first, "osImageId": centos}}, user=member)
    async with rt.db.write() as session:
        stock = await session.scalar(select(ProductModel.stock))
        await session.execute(update(ProductModel).values(stock=0))
    before = await redemption_state(rt)
    preview = await gql(PREVIEW, {"code": second}, user=member)
    refused = await gql(REDEEM, {"input": {"code": second, "osImageId": centos}}, user=member)

    assert (ok["data"]["redeemCard"]["order"]["listPrice"], stock) == ("3222.00", 4)
    assert preview["data"]["redemptionPreview"] == {"__typename": "OutOfStockError", "code": "OUT_OF_STOCK"}
    assert refused["data"]["redeemCard"] == {"__typename": "OutOfStockError", "code": "OUT_OF_STOCK"}
    assert await redemption_state(rt) == before


async def test_the_last_unit_of_stock_goes_to_one_of_two_concurrent_redemptions(
    gql, client, rt, admin, catalog
):
    ids = await catalog_ids(gql, admin)
    made = await create_batch(
        gql, admin, quantity=2, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"])
    )
    first, second = await download_codes(gql, client, admin, made["id"])
    racers = [await make_user(rt, f"racer{i}", Role.MEMBER) for i in range(2)]
    centos = (await image_ids(gql, racers[0]))[("sh-bgp", "CentOS 7.9 x64")]
    async with rt.db.write() as session:
        await session.execute(update(ProductModel).values(stock=1))

    results = await asyncio.gather(
        *(
            gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=racer)
            for code, racer in zip((first, second), racers, strict=True)
        )
    )

    kinds = sorted(result["data"]["redeemCard"]["__typename"] for result in results)
    assert kinds == ["OutOfStockError", "RedeemCardSuccess"]
    state = await redemption_state(rt)
    assert state["counts"]["orders"] == state["counts"]["redemptions"] == 1
    assert [stock for _, stock in state["stock"]] == [0]
    assert sorted(status for _, status, _, _ in state["cards"]) == [CardStatus.UNUSED, CardStatus.USED]
    assert (await batch_row(rt, made["id"])).used_count == 1


async def test_a_write_that_finds_the_stock_gone_is_refused_and_rolled_back(gql, client, rt, admin, catalog):
    # the look-up saw stock, then another redemption took the last unit before this write: the
    # model's CHECK (stock >= 0) refuses the write (the path the race above may take)
    ids = await catalog_ids(gql, admin)
    made, _ = await one_card(gql, client, admin, config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"]))
    member = await make_user(rt, "late", Role.MEMBER)
    async with rt.db.write() as session:
        await session.execute(update(ProductModel).values(stock=0))
        batch = await session.get(CardBatch, int(made["id"]))
        card_id = await session.scalar(select(Card.id))
    assert batch is not None
    before = await redemption_state(rt)
    write = late_write(rt, member, batch, card_id, key="late-key", request_hash=b"x" * 32, order_no="T1")

    with pytest.raises(OutOfStock):
        await rt.db.run_write(write.run)

    assert await redemption_state(rt) == before


async def test_an_order_number_drawn_twice_is_drawn_again(
    gql, client, rt, admin, member, catalog, monkeypatch
):
    _, first = await one_card(gql, client, admin)
    _, second = await one_card(gql, client, admin)
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    drawn = iter(["T202611260000000001", "T202611260000000001", "T202611260000000002"])
    monkeypatch.setattr(redemption, "_new_order_no", lambda rt: next(drawn))

    one = await gql(REDEEM, {"input": {"code": first, "osImageId": centos}}, user=member)
    other = await gql(REDEEM, {"input": {"code": second, "osImageId": centos}}, user=member)

    assert one["data"]["redeemCard"]["order"]["orderNo"] == "T202611260000000001"
    assert other["data"]["redeemCard"]["order"]["orderNo"] == "T202611260000000002"
    state = await redemption_state(rt)
    assert state["counts"] == {"orders": 2, "redemptions": 2, "provisioning_jobs": 2, "idempotency_keys": 0}


async def test_of_many_concurrent_redemptions_of_one_card_exactly_one_wins(gql, client, rt, admin, catalog):
    made, code = await one_card(gql, client, admin)
    members = [await make_user(rt, f"racer{i}", Role.MEMBER) for i in range(50)]
    centos = (await image_ids(gql, members[0]))[("sh-bgp", "CentOS 7.9 x64")]

    results = await asyncio.gather(
        *(gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=racer) for racer in members)
    )

    kinds = sorted(result["data"]["redeemCard"]["__typename"] for result in results)
    assert kinds == ["CardUnavailableError"] * 49 + ["RedeemCardSuccess"]
    assert {r["data"]["redeemCard"].get("code") for r in results} == {"CARD_USED", None}
    state = await redemption_state(rt)
    assert (
        state["counts"]["orders"],
        state["counts"]["redemptions"],
        state["counts"]["provisioning_jobs"],
    ) == (1, 1, 1)
    assert (await batch_row(rt, made["id"])).used_count == 1


async def test_an_idempotency_key_gives_the_first_order_again(gql, client, rt, admin, member, catalog):
    _, code = await one_card(gql, client, admin)
    images = await image_ids(gql, member)
    centos, ubuntu = images[("sh-bgp", "CentOS 7.9 x64")], images[("sh-bgp", "Ubuntu 22.04 x64")]
    first_input = {"code": code, "osImageId": centos, "idempotencyKey": "k-1"}

    first = await gql(REDEEM, {"input": first_input}, user=member)
    again = await gql(REDEEM, {"input": {**first_input, "code": code.lower()}}, user=member)
    other = await gql(REDEEM, {"input": {**first_input, "osImageId": ubuntu}}, user=member)

    assert again["data"]["redeemCard"]["order"]["id"] == first["data"]["redeemCard"]["order"]["id"]
    assert other["data"]["redeemCard"] == {
        "__typename": "IdempotencyConflictError",
        "code": "IDEMPOTENCY_CONFLICT",
    }
    assert (await redemption_state(rt))["counts"]["orders"] == 1


async def test_concurrent_requests_with_one_key_make_one_order(gql, client, rt, admin, member, catalog):
    _, code = await one_card(gql, client, admin)
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    wanted = {"input": {"code": code, "osImageId": centos, "idempotencyKey": "same"}}

    results = await asyncio.gather(*(gql(REDEEM, wanted, user=member) for _ in range(10)))

    orders = {result["data"]["redeemCard"]["order"]["id"] for result in results}
    assert len(orders) == 1
    assert (await redemption_state(rt))["counts"]["orders"] == 1


async def test_a_write_whose_key_was_taken_meanwhile_replays_that_order_or_conflicts(
    gql, client, rt, admin, member, catalog
):
    # two requests with one key passed the look-up before either wrote (what a race looks like)
    made = await create_batch(gql, admin, quantity=2)
    async with rt.db.read() as session:
        batch = await session.get(CardBatch, int(made["id"]))
        first_card, second_card = (await session.scalars(select(Card.id).order_by(Card.id))).all()
    assert batch is not None

    def write(card_id: int, request_hash: bytes, order_no: str):
        return late_write(
            rt, member, batch, card_id, key="shared", request_hash=request_hash, order_no=order_no
        )

    first = await rt.db.run_write(write(first_card, b"a" * 32, "T1").run)
    before = await redemption_state(rt)

    # the same input again (so the same card, now used): the first order
    again = await rt.db.run_write(write(first_card, b"a" * 32, "T2").run)
    # other input (another card): a conflict, and the other card stays unused
    with pytest.raises(IdempotencyConflict):
        await rt.db.run_write(write(second_card, b"b" * 32, "T3").run)

    assert (again.order.id, again.card) == (first.order.id, None)
    assert await redemption_state(rt) == before


async def test_only_members_redeem(gql, client, admin, catalog):
    _, code = await one_card(gql, client, admin)

    as_admin = await gql(REDEEM, {"input": {"code": code}}, user=admin)
    signed_out = await gql(PREVIEW, {"code": code})

    assert as_admin["data"] is None and as_admin["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert signed_out["data"] is None and signed_out["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_member_cannot_read_another_members_order(gql, client, rt, admin, member, catalog):
    _, code = await one_card(gql, client, admin)
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    order_id = (await gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=member))["data"][
        "redeemCard"
    ]["order"]["id"]
    stranger = await make_user(rt, "stranger", Role.MEMBER)
    read = "query($id: ID!){ order(id: $id) { id memberId } }"

    assert (await gql(read, {"id": order_id}, user=stranger)) == {"data": {"order": None}}
    assert (await gql(read, {"id": order_id}, user=member))["data"]["order"] == {
        "id": order_id,
        "memberId": str(member.id),
    }
    assert (await gql(read, {"id": order_id}, user=admin))["data"]["order"]["id"] == order_id


async def test_the_usage_log_and_the_members_lists(gql, client, rt, clock, admin, member, catalog):
    made, code = await one_card(gql, client, admin, name="年终福利")
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    clock.set(datetime(2026, 12, 1, 16, 30, tzinfo=UTC))  # 2026-12-02 00:30 in Shanghai
    order_id = (await gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=member))["data"][
        "redeemCard"
    ]["order"]["id"]
    log = """query($f: RedemptionFilter){ redemptions(filter: $f) { totalCount nodes {
        memberId productType cardName batch { id } card { maskedCode order { id } } order { id status } } } }"""

    on_the_day = await gql(log, {"f": {"from": "2026-12-02", "to": "2026-12-02"}}, user=admin)
    day_before = await gql(log, {"f": {"from": "2026-12-01", "to": "2026-12-01"}}, user=admin)
    by_last4 = await gql(log, {"f": {"keyword": code[-4:]}}, user=admin)
    mine = await gql("{ myRedemptions { totalCount nodes { cardName order { id } } } }", user=member)
    orders = await gql(
        "{ orders(filter: {status: PENDING}) { totalCount nodes { id orderNo } } }", user=admin
    )

    assert on_the_day["data"]["redemptions"] == {
        "totalCount": 1,
        "nodes": [
            {
                "memberId": str(member.id),
                "productType": "CLOUD_SERVER",
                "cardName": "年终福利",
                "batch": {"id": made["id"]},
                "card": {"maskedCode": f"****-****-****-{code[-4:]}", "order": {"id": order_id}},
                "order": {"id": order_id, "status": "PENDING"},
            }
        ],
    }
    assert day_before["data"]["redemptions"] == {"totalCount": 0, "nodes": []}
    assert by_last4["data"]["redemptions"]["totalCount"] == 1
    assert mine["data"]["myRedemptions"] == {
        "totalCount": 1,
        "nodes": [{"cardName": "年终福利", "order": {"id": order_id}}],
    }
    assert orders["data"]["orders"]["totalCount"] == 1
    assert (await gql("{ myInstances { totalCount } }", user=member))["data"]["myInstances"] == {
        "totalCount": 0
    }


async def test_idempotency_keys_are_kept_two_days_then_forgotten(
    gql, client, rt, clock, admin, member, catalog
):
    from services.redemption import purge_idempotency_keys

    clock.set(datetime(2026, 11, 26, 8, 0, tzinfo=UTC))
    _, code = await one_card(gql, client, admin)
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    wanted = {"input": {"code": code, "osImageId": centos, "idempotencyKey": "kept"}}
    first = await gql(REDEEM, wanted, user=member)

    clock.set(datetime(2026, 11, 28, 7, 59, tzinfo=UTC))  # 47 h 59 min later: still kept
    assert await purge_idempotency_keys(rt) == 0
    again = await gql(REDEEM, wanted, user=member)
    clock.set(datetime(2026, 11, 28, 8, 1, tzinfo=UTC))
    assert await purge_idempotency_keys(rt) == 1

    assert again["data"]["redeemCard"]["order"]["id"] == first["data"]["redeemCard"]["order"]["id"]
    assert (await redemption_state(rt))["counts"]["idempotency_keys"] == 0


async def test_batch_and_order_numbers_carry_the_same_business_date(
    gql, client, clock, admin, member, catalog
):
    # 19:53 UTC on December 1 is already December 2 in Asia/Shanghai
    clock.set(datetime(2026, 12, 1, 19, 53, tzinfo=UTC))
    made, code = await one_card(gql, client, admin)
    ids = await image_ids(gql, member)

    result = await gql(
        REDEEM, {"input": {"code": code, "osImageId": ids[("sh-bgp", "Ubuntu 22.04 x64")]}}, user=member
    )

    order = result["data"]["redeemCard"]["order"]
    assert made["batchNo"].startswith("P20261202-"), made
    assert order["orderNo"].startswith("T20261202") and len(order["orderNo"]) == 19, order
