"""Card batches and cards through the ASGI app: creating batches (prices, refusals, audit), the admin
lists and their paging, card search, status and remark writes, and who may do any of it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from models import Card, CardBatch, CardStatus, ProductModel
from tests.conftest import CLIENT_ADDRESS
from tests.factories import (
    audit_rows,
    bare_metal_config,
    batch_input,
    card_rows,
    catalog_ids,
    cloud_server_config,
    create_batch,
    download_codes,
    line_id,
    row_counts,
    snapshot,
    virtual_host_config,
)

# 2026-07-01 00:30 in Asia/Shanghai: "today" there is already a day ahead of UTC
JUST_PAST_MIDNIGHT_IN_SHANGHAI = datetime(2026, 6, 30, 16, 30, tzinfo=UTC)
GENERATED_BATCH_NO = re.compile(r"^P\d{8}-[0-9A-Z]{6}$")
MASKED_CODE = re.compile(r"^\*{4}-\*{4}-\*{4}-[0-9A-HJKMNP-TV-Z]{4}$")

BATCH_FIELDS = """
fragment BatchFields on CardBatch {
  id batchNo name productType referencePrice quantity usedCount disabledCount downloadCount
  validUntil status createdAt
  config {
    productType regionName lineName lineId months cpuCores memoryGb diskGb bandwidthMbps
    defenseGbps ipCount productModelName planName summary
  }
}
"""
CREATE = (
    """
mutation ($input: CreateCardBatchInput!) {
  createCardBatch(input: $input) {
    __typename
    ... on CreateCardBatchSuccess { batch { ...BatchFields } }
    ... on InvalidInputError { code message fieldErrors { field message } }
    ... on Error { code message }
  }
}
"""
    + BATCH_FIELDS
)
BATCH = (
    """
query ($id: ID!) { cardBatch(id: $id) { ...BatchFields } }
"""
    + BATCH_FIELDS
)
BATCH_CARD_STATES = """
query ($id: ID!) {
  cardBatch(id: $id) {
    cards(first: 100) { totalCount nodes { status remark usedAt memberId expired } }
  }
}
"""
BATCHES = """
query ($filter: CardBatchFilter, $first: Int, $after: String, $offset: Int) {
  cardBatches(filter: $filter, first: $first, after: $after, offset: $offset) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id } }
    nodes { id batchNo name }
  }
}
"""
CARDS = """
query ($id: ID!, $first: Int, $after: String, $offset: Int, $status: CardStatus, $keyword: String) {
  cardBatch(id: $id) {
    cards(first: $first, after: $after, offset: $offset, status: $status, keyword: $keyword) {
      totalCount
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      edges { cursor node { id } }
      nodes { id maskedCode status remark expired batch { id } }
    }
  }
}
"""
SET_BATCH_STATUS = """
mutation ($id: ID!, $status: CardBatchStatus!) {
  setCardBatchStatus(id: $id, status: $status) {
    __typename
    ... on SetCardBatchStatusSuccess { batch { id status } }
    ... on Error { code message }
  }
}
"""
SET_CARD_STATUS = """
mutation ($id: ID!, $status: CardStatus!) {
  setCardStatus(id: $id, status: $status) {
    __typename
    ... on SetCardStatusSuccess { card { id status batch { id disabledCount usedCount } } }
    ... on Error { code message }
  }
}
"""
SET_CARD_REMARK = """
mutation ($id: ID!, $remark: String!) {
  setCardRemark(id: $id, remark: $remark) {
    __typename
    ... on SetCardRemarkSuccess { card { id remark } }
    ... on InvalidInputError { code message fieldErrors { field message } }
    ... on Error { code message }
  }
}
"""
CREATE_DOWNLOAD = """
mutation ($batchId: ID!, $password: String!) {
  createCardBatchDownload(batchId: $batchId, password: $password) {
    __typename
    ... on CardBatchDownload { url expiresAt }
    ... on Error { code message }
  }
}
"""

INVALID_INPUT_MESSAGE = "输入有误，请检查标出的字段。"
NOT_FOUND = {"__typename": "NotFoundError", "code": "NOT_FOUND", "message": "对象不存在。"}


def _invalid(*field_errors: tuple[str, str]) -> dict[str, Any]:
    return {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
        "message": INVALID_INPUT_MESSAGE,
        "fieldErrors": [{"field": field, "message": message} for field, message in field_errors],
    }


def _top_level(result: dict[str, Any]) -> list[tuple[list[Any], str, str]]:
    return [(e["path"], e["extensions"]["code"], e["message"]) for e in result["errors"]]


async def _cards(gql, admin, batch_id: str, **arguments: Any) -> dict[str, Any]:
    result = await gql(CARDS, {"id": batch_id, **arguments}, user=admin)
    assert "errors" not in result, result
    return result["data"]["cardBatch"]["cards"]


async def _all_cards(gql, admin, batch_id: str) -> list[dict[str, Any]]:
    return (await _cards(gql, admin, batch_id, first=100))["nodes"]


async def _use_card(rt, card_id: str, member_id: int, at: datetime) -> None:
    """Make a card USED the way a redemption leaves it: the card row and the batch's counter."""
    async with rt.db.write() as session:
        card = await session.get(Card, int(card_id))
        await session.execute(
            update(Card)
            .where(Card.id == card.id)
            .values(status=CardStatus.USED, used_at=at, member_id=member_id)
        )
        await session.execute(
            update(CardBatch).where(CardBatch.id == card.batch_id).values(used_count=CardBatch.used_count + 1)
        )


# ---------------------------------------------------------------- creating a batch

SH_BGP_CLOUD = {
    "productType": "CLOUD_SERVER",
    "regionName": "华东-上海",
    "lineName": "上海 BGP",
    "cpuCores": 1,
    "memoryGb": 1,
    "diskGb": 10,
    "bandwidthMbps": 10,
    "defenseGbps": 0,
    "ipCount": None,
    "productModelName": None,
    "planName": None,
    "summary": "1 核 · 1 GB 内存 · 10 GB 磁盘 · 10 Mbps · 防御 0 Gbps",
}
BARE_METAL = {
    "productType": "BARE_METAL",
    "regionName": "华东-上海",
    "lineName": "上海 BGP",
    "months": 3,
    "cpuCores": None,
    "memoryGb": None,
    "diskGb": None,
    "bandwidthMbps": 10,
    "defenseGbps": 10,
    "ipCount": 3,
    "productModelName": "E5-2650 v4 双路",
    "planName": None,
    "summary": "E5-2650 v4 双路 · CPU: Intel E5-2650 v4 12核24线程 ×2 · 内存: DDR4 64GB"
    " · 磁盘: SSD 480GB ×1, SATA 2TB ×1 · IP: 3 个 · 带宽: 10 Mbps · 防御: 10 Gbps",
}
VIRTUAL_HOST = {
    "productType": "VIRTUAL_HOST",
    "regionName": "华东-上海",
    "lineName": "上海 BGP",
    "months": 1,
    "cpuCores": None,
    "memoryGb": None,
    "diskGb": None,
    "bandwidthMbps": None,
    "defenseGbps": None,
    "ipCount": None,
    "productModelName": None,
    "planName": "入门型虚拟主机",
    "summary": "入门型虚拟主机 · 网页空间 2GB · 数据库 200MB · 月流量 50GB",
}
CREATION_CASES = {
    "cloud server, 1 month": (
        lambda ids: cloud_server_config(ids["sh-bgp"], months=1),
        {**SH_BGP_CLOUD, "months": 1},
        "83.66",
        None,
    ),
    "cloud server, 12 months": (
        lambda ids: cloud_server_config(ids["sh-bgp"], months=12),
        {**SH_BGP_CLOUD, "months": 12},
        "853.33",
        "SPRING-2026_A",
    ),
    "bare metal, 3 IPs, 3 months": (
        lambda ids: bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"], months=3, ip_count=3),
        BARE_METAL,
        "3222.00",
        None,
    ),
    "virtual host, 1 month": (
        lambda ids: virtual_host_config(ids["sh-bgp"], ids["vh-basic"], months=1),
        VIRTUAL_HOST,
        "15.00",
        "VH-1",
    ),
}


@pytest.mark.parametrize("case", list(CREATION_CASES))
async def test_create_card_batch_freezes_the_config_and_price_and_makes_the_cards(
    gql, rt, clock, catalog, admin, case
):
    # given the example catalog, just past midnight in Shanghai
    clock.set(JUST_PAST_MIDNIGHT_IN_SHANGHAI)
    ids = await catalog_ids(gql, admin)
    make_config, expected_config, price, batch_no = CREATION_CASES[case]
    wanted = batch_input(
        make_config(ids), name="  春节促销卡  ", quantity=3, valid_until="2026-12-31", batch_no=batch_no
    )

    # when an admin creates a batch
    result = await gql(CREATE, {"input": wanted}, user=admin)

    # then it has the frozen configuration, its Linux price and fresh counters
    created = result["data"]["createCardBatch"]
    assert created["__typename"] == "CreateCardBatchSuccess", result
    batch = dict(created["batch"])
    batch_id = batch.pop("id")
    made_no = batch.pop("batchNo")
    if batch_no is None:
        assert GENERATED_BATCH_NO.match(made_no), made_no
        assert made_no.startswith("P20260701-")  # today in the business time zone, not in UTC
    else:
        assert made_no == batch_no
    assert batch == {
        "name": "春节促销卡",
        "productType": expected_config["productType"],
        "referencePrice": price,
        "quantity": 3,
        "usedCount": 0,
        "disabledCount": 0,
        "downloadCount": 0,
        "validUntil": "2026-12-31",
        "status": "ACTIVE",
        "createdAt": "2026-06-30T16:30:00+00:00",
        "config": {**expected_config, "lineId": ids["sh-bgp"]},
    }
    # and reading it back gives the same
    assert (await gql(BATCH, {"id": batch_id}, user=admin))["data"]["cardBatch"] == created["batch"]
    # and every card exists, unused
    cards = (await gql(BATCH_CARD_STATES, {"id": batch_id}, user=admin))["data"]["cardBatch"]["cards"]
    assert cards == {
        "totalCount": 3,
        "nodes": [{"status": "UNUSED", "remark": None, "usedAt": None, "memberId": None, "expired": False}]
        * 3,
    }
    assert len(await card_rows(rt, batch_id)) == 3
    # and the creation is audited once, with who and from where
    [entry] = await audit_rows(rt)
    assert (entry.action, entry.entity, entry.entity_id, entry.actor_id) == (
        "batch.create",
        "batch",
        batch_id,
        admin.id,
    )
    assert entry.client_address == CLIENT_ADDRESS
    assert entry.at == JUST_PAST_MIDNIGHT_IN_SHANGHAI
    assert entry.old is None
    assert entry.new == {
        "batchNo": made_no,
        "name": "春节促销卡",
        "productType": expected_config["productType"],
        "quantity": 3,
        "referencePrice": price,
        "validUntil": "2026-12-31",
        "validFrom": None,
        "perMemberLimit": None,
        "status": "ACTIVE",
        "summary": expected_config["summary"],
    }


async def test_a_batch_can_be_created_disabled(gql, catalog, admin):
    batch = await create_batch(gql, admin, status="DISABLED")

    assert batch["status"] == "DISABLED"


async def test_bare_metal_ip_count_defaults_to_the_models_included_ips(gql, catalog, admin):
    ids = await catalog_ids(gql, admin)
    config = bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"], months=1, ip_count=None)

    result = await gql(CREATE, {"input": batch_input(config)}, user=admin)

    batch = result["data"]["createCardBatch"]["batch"]
    # 899.00 + 0 extra IPs + 35.00 bandwidth + 100.00 defense
    assert (batch["config"]["ipCount"], batch["referencePrice"]) == (1, "1034.00")


async def _refused(gql, rt, admin, wanted: dict[str, Any], **headers: str) -> dict[str, Any]:
    """Send a creation that must be refused; check that nothing at all was written."""
    before = await snapshot(rt)
    result = await gql(CREATE, {"input": wanted}, user=admin, headers=headers or None)
    assert "errors" not in result, result
    assert await snapshot(rt) == before
    return result["data"]["createCardBatch"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "不能为空。"), ("   ", "不能为空。"), ("名" * 101, "不能超过 100 个字符。")],
)
async def test_a_blank_or_too_long_name_is_refused(gql, rt, catalog, admin, name, message):
    line = await line_id(gql, admin, "sh-bgp")

    refused = await _refused(gql, rt, admin, batch_input(cloud_server_config(line), name=name))

    assert refused == _invalid(("name", message))


async def test_a_name_of_100_characters_is_accepted(gql, catalog, admin):
    batch = await create_batch(gql, admin, name="名" * 100)

    assert batch["name"] == "名" * 100


async def test_quantity_zero_and_above_the_maximum_are_refused(gql, rt, catalog, admin):
    line = await line_id(gql, admin, "sh-bgp")
    maximum = rt.settings.max_batch_quantity
    message = f"必须在 1 到 {maximum} 之间。"

    for quantity in (0, -1, maximum + 1):
        refused = await _refused(gql, rt, admin, batch_input(cloud_server_config(line), quantity=quantity))
        assert refused == _invalid(("quantity", message)), quantity


async def test_the_quantity_limit_comes_from_the_settings(gql, rt, catalog, admin, monkeypatch):
    # given a small configured maximum (so the boundary can be made for real)
    monkeypatch.setattr(rt.settings, "max_batch_quantity", 4)
    line = await line_id(gql, admin, "sh-bgp")

    # then the maximum itself is accepted and one more is refused
    assert (await create_batch(gql, admin, quantity=4))["quantity"] == 4
    refused = await _refused(gql, rt, admin, batch_input(cloud_server_config(line), quantity=5))
    assert refused == _invalid(("quantity", "必须在 1 到 4 之间。"))


async def test_valid_until_before_today_in_shanghai_is_refused(gql, rt, clock, catalog, admin):
    # given 00:30 on 2026-07-01 in Shanghai (still 2026-06-30 in UTC)
    clock.set(JUST_PAST_MIDNIGHT_IN_SHANGHAI)
    line = await line_id(gql, admin, "sh-bgp")

    # when the batch would end yesterday (Shanghai), it is refused
    refused = await _refused(gql, rt, admin, batch_input(cloud_server_config(line), valid_until="2026-06-30"))
    assert refused == _invalid(("validUntil", "不能早于今天（2026-07-01）。"))

    # and today (Shanghai) is accepted
    assert (await create_batch(gql, admin, valid_until="2026-07-01"))["validUntil"] == "2026-07-01"


async def test_every_problem_is_reported_at_once_in_input_order(gql, rt, clock, catalog, admin):
    clock.set(JUST_PAST_MIDNIGHT_IN_SHANGHAI)
    line = await line_id(gql, admin, "sh-bgp")
    config = cloud_server_config(line, cpu_cores=3, disk_gb=15)
    wanted = batch_input(config, name="", quantity=0, valid_until="2026-06-30", batch_no="bad no!")

    refused = await _refused(gql, rt, admin, wanted)

    assert refused == _invalid(
        ("name", "不能为空。"),
        ("batchNo", "格式不正确：1-32 letters, digits, - or _。"),
        ("quantity", "必须在 1 到 100000 之间。"),
        ("validUntil", "不能早于今天（2026-07-01）。"),
        ("config.cpuCores", "3 不是可选值，可选：1, 2, 4, 8, 16。"),
        ("config.diskGb", "必须是 10 的整数倍（从 10 起）。"),
    )


async def test_an_unknown_line_is_not_found(gql, rt, catalog, admin):
    refused = await _refused(gql, rt, admin, batch_input(cloud_server_config("999999")))

    assert refused == NOT_FOUND


async def test_a_product_the_line_does_not_offer_is_refused(gql, rt, catalog, admin):
    ids = await catalog_ids(gql, admin)
    config = virtual_host_config(ids["hk-cn2"], ids["vh-basic"])

    refused = await _refused(gql, rt, admin, batch_input(config))

    assert refused == _invalid(
        ("config.productType", "该线路不提供此产品类型。"), ("config.planId", "不属于所选线路。")
    )


async def test_a_taken_batch_no_is_refused(gql, rt, catalog, admin):
    line = await line_id(gql, admin, "sh-bgp")
    await create_batch(gql, admin, batch_no="VIP-001")

    refused = await _refused(gql, rt, admin, batch_input(cloud_server_config(line), batch_no="VIP-001"))

    assert refused == _invalid(("batchNo", "已被使用。"))


@pytest.mark.parametrize("batch_no", ["", "has space", "中文批次", "semi;colon", "A" * 33])
async def test_a_badly_formed_batch_no_is_refused(gql, rt, catalog, admin, batch_no):
    line = await line_id(gql, admin, "sh-bgp")

    refused = await _refused(gql, rt, admin, batch_input(cloud_server_config(line), batch_no=batch_no))

    assert refused == _invalid(("batchNo", "格式不正确：1-32 letters, digits, - or _。"))


async def test_a_bare_metal_model_without_stock_is_refused(gql, rt, catalog, admin):
    # given the model has no stock left
    ids = await catalog_ids(gql, admin)
    async with rt.db.write() as session:
        await session.execute(update(ProductModel).values(stock=0))

    refused = await _refused(gql, rt, admin, batch_input(bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"])))

    assert refused == {
        "__typename": "OutOfStockError",
        "code": "OUT_OF_STOCK",
        "message": "该产品型号库存不足。",
    }


async def test_errors_speak_english_when_asked(gql, rt, catalog, admin):
    line = await line_id(gql, admin, "sh-bgp")

    refused = await _refused(
        gql, rt, admin, batch_input(cloud_server_config(line), name=" "), **{"Accept-Language": "en"}
    )

    assert refused == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
        "message": "Some input is invalid; see the fields named.",
        "fieldErrors": [{"field": "name", "message": "Must not be blank."}],
    }


# ---------------------------------------------------------------- who may do what


def _operations(batch_id: str, card_id: str, line: str) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "cardBatches": (BATCHES, {}),
        "cardBatch": (BATCH, {"id": batch_id}),
        "createCardBatch": (CREATE, {"input": batch_input(cloud_server_config(line))}),
        "setCardBatchStatus": (SET_BATCH_STATUS, {"id": batch_id, "status": "DISABLED"}),
        "setCardStatus": (SET_CARD_STATUS, {"id": card_id, "status": "DISABLED"}),
        "setCardRemark": (SET_CARD_REMARK, {"id": card_id, "remark": "hello"}),
        "createCardBatchDownload": (CREATE_DOWNLOAD, {"batchId": batch_id, "password": "x"}),
    }


@pytest.mark.parametrize(
    "operation",
    [
        "cardBatches",
        "cardBatch",
        "createCardBatch",
        "setCardBatchStatus",
        "setCardStatus",
        "setCardRemark",
        "createCardBatchDownload",
    ],
)
@pytest.mark.parametrize(
    ("who", "code", "message"),
    [("signed out", "UNAUTHENTICATED", "请先登录。"), ("member", "FORBIDDEN", "无权执行此操作。")],
)
async def test_only_admins_may_touch_batches_and_cards(
    gql, rt, catalog, admin, member, operation, who, code, message
):
    # given a batch with a card that the operation would change
    batch = await create_batch(gql, admin, quantity=2)
    [card, _] = await _all_cards(gql, admin, batch["id"])
    line = await line_id(gql, admin, "sh-bgp")
    document, variables = _operations(batch["id"], card["id"], line)[operation]
    before = await snapshot(rt, batch["id"])

    # when someone who is not an admin tries it
    result = await gql(document, variables, user=member if who == "member" else None)

    # then it is a top-level error and nothing changed
    assert _top_level(result) == [([operation], code, message)]
    # cardBatch is nullable, so only it becomes null; every other field here is non-null
    assert result["data"] == ({"cardBatch": None} if operation == "cardBatch" else None)
    assert await snapshot(rt, batch["id"]) == before


# ---------------------------------------------------------------- the batch list


async def test_batches_come_newest_first_and_filter(gql, rt, catalog, admin):
    # given batches of every product, one disabled, with names and numbers to search
    ids = await catalog_ids(gql, admin)
    spring = await create_batch(gql, admin, name="Spring PROMO 云服务器")
    metal = await create_batch(
        gql, admin, name="裸金属", config=bare_metal_config(ids["sh-bgp"], ids["bm-e5-2650"])
    )
    host = await create_batch(
        gql,
        admin,
        name="summer promo",
        config=virtual_host_config(ids["sh-bgp"], ids["vh-basic"]),
        status="DISABLED",
    )
    vip = await create_batch(gql, admin, name="大客户", batch_no="VIP-2026-001")
    newest_first = [vip["id"], host["id"], metal["id"], spring["id"]]

    async def listed(**filter: Any) -> tuple[int, list[str]]:
        result = await gql(BATCHES, {"filter": filter or None}, user=admin)
        assert "errors" not in result, result
        page = result["data"]["cardBatches"]
        return page["totalCount"], [node["id"] for node in page["nodes"]]

    # then
    assert await listed() == (4, newest_first)
    assert await listed(productType="CLOUD_SERVER") == (2, [vip["id"], spring["id"]])
    assert await listed(productType="BARE_METAL") == (1, [metal["id"]])
    assert await listed(status="DISABLED") == (1, [host["id"]])
    assert await listed(status="ACTIVE") == (3, [vip["id"], metal["id"], spring["id"]])
    assert await listed(keyword="promo") == (2, [host["id"], spring["id"]])  # any case
    assert await listed(keyword="  PROMO ") == (2, [host["id"], spring["id"]])
    assert await listed(keyword="vip-2026") == (1, [vip["id"]])  # part of the batch number
    assert await listed(keyword=spring["batchNo"][-6:]) == (1, [spring["id"]])
    assert await listed(keyword="%") == (0, [])  # no LIKE wildcards from the user
    assert await listed(keyword="_") == (0, [])
    assert await listed(batchNo="VIP-2026-001") == (1, [vip["id"]])
    assert await listed(batchNo="VIP-2026") == (0, [])  # exact, not a part
    assert await listed(keyword="promo", status="ACTIVE") == (1, [spring["id"]])
    assert await listed(productType="VIRTUAL_HOST", status="ACTIVE") == (0, [])


async def test_paging_batches_with_after_sees_each_once_even_with_inserts(gql, rt, catalog, admin):
    # given 7 batches
    made = [(await create_batch(gql, admin, name=f"b{index}"))["id"] for index in range(7)]
    newest_first = list(reversed(made))

    # when an admin walks them 3 at a time, while another batch is made after the first page
    pages = []
    after = None
    while True:
        result = await gql(BATCHES, {"first": 3, "after": after}, user=admin)
        page = result["data"]["cardBatches"]
        pages.append(page)
        if len(pages) == 1:
            await create_batch(gql, admin, name="made meanwhile")
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    # then every batch that was there is seen exactly once, newest first
    seen = [node["id"] for page in pages for node in page["nodes"]]
    assert seen == newest_first
    assert [len(page["nodes"]) for page in pages] == [3, 3, 1]
    assert [page["totalCount"] for page in pages] == [7, 8, 8]
    assert [page["pageInfo"]["hasPreviousPage"] for page in pages] == [False, True, True]
    assert [page["pageInfo"]["hasNextPage"] for page in pages] == [True, True, False]
    for page in pages:
        assert [edge["node"]["id"] for edge in page["edges"]] == [node["id"] for node in page["nodes"]]
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]


async def test_offset_jumps_to_a_page_of_batches(gql, catalog, admin):
    made = [(await create_batch(gql, admin, name=f"b{index}"))["id"] for index in range(7)]
    newest_first = list(reversed(made))

    page = (await gql(BATCHES, {"first": 2, "offset": 3}, user=admin))["data"]["cardBatches"]
    last = (await gql(BATCHES, {"first": 2, "offset": 6}, user=admin))["data"]["cardBatches"]
    beyond = (await gql(BATCHES, {"first": 2, "offset": 50}, user=admin))["data"]["cardBatches"]
    zero = (await gql(BATCHES, {"first": 2, "offset": 0}, user=admin))["data"]["cardBatches"]

    assert [node["id"] for node in page["nodes"]] == newest_first[3:5]
    assert (page["totalCount"], page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) == (
        7,
        True,
        True,
    )
    assert [node["id"] for node in last["nodes"]] == newest_first[6:]
    assert (last["pageInfo"]["hasPreviousPage"], last["pageInfo"]["hasNextPage"]) == (True, False)
    assert (beyond["nodes"], beyond["totalCount"], beyond["pageInfo"]["endCursor"]) == ([], 7, None)
    assert [node["id"] for node in zero["nodes"]] == newest_first[:2]
    assert zero["pageInfo"]["hasPreviousPage"] is False


async def test_the_default_page_is_20_batches(gql, catalog, admin):
    for index in range(21):
        await create_batch(gql, admin, name=f"b{index}")

    page = (await gql("query { cardBatches { totalCount nodes { id } } }", user=admin))["data"]["cardBatches"]

    assert (page["totalCount"], len(page["nodes"])) == (21, 20)


async def test_bad_paging_arguments_are_top_level_invalid_input(gql, catalog, admin):
    await create_batch(gql, admin)
    first_page = (await gql(BATCHES, {"first": 1}, user=admin))["data"]["cardBatches"]
    cursor = first_page["pageInfo"]["endCursor"]
    card_cursor = (await _cards(gql, admin, first_page["nodes"][0]["id"], first=1))["pageInfo"]["endCursor"]
    cases = [
        ({"first": 0}, "first 必须在 1 到 100 之间。"),
        ({"first": 101}, "first 必须在 1 到 100 之间。"),
        ({"first": -5}, "first 必须在 1 到 100 之间。"),
        ({"offset": -1}, "offset 不能为负数。"),
        ({"offset": 1, "after": cursor}, "offset 不能与 after 同时使用。"),
        ({"after": "garbage"}, "游标无效。"),
        ({"after": "!!!"}, "游标无效。"),
        ({"after": card_cursor}, "游标无效。"),  # a cursor of another list
    ]

    for variables, message in cases:
        result = await gql(BATCHES, variables, user=admin)
        assert result["data"] is None, variables
        assert _top_level(result) == [(["cardBatches"], "INVALID_INPUT", message)], variables


async def test_first_100_is_allowed(gql, catalog, admin):
    # more than the default page of 20, so a silent cap at 20 would show
    for index in range(25):
        await create_batch(gql, admin, name=f"b{index}")

    result = await gql(BATCHES, {"first": 100}, user=admin)

    page = result["data"]["cardBatches"]
    assert page["totalCount"] == 25
    assert len(page["nodes"]) == 25
    assert page["pageInfo"]["hasNextPage"] is False


async def test_card_batch_by_id_and_null_for_unknown_ids(gql, catalog, admin):
    batch = await create_batch(gql, admin)

    found = await gql(BATCH, {"id": batch["id"]}, user=admin)

    assert found["data"]["cardBatch"]["id"] == batch["id"]
    assert found["data"]["cardBatch"]["batchNo"] == batch["batchNo"]
    for unknown in ("999999", "abc", "-1", "1.0", "", "9" * 30):
        assert await gql(BATCH, {"id": unknown}, user=admin) == {"data": {"cardBatch": None}}, unknown


# ---------------------------------------------------------------- the cards of a batch


async def test_cards_come_oldest_first_and_page_with_after(gql, catalog, admin):
    # given a batch of 45 cards
    batch = await create_batch(gql, admin, quantity=45)

    # when an admin walks its cards 20 at a time
    pages = []
    after = None
    while True:
        page = await _cards(gql, admin, batch["id"], first=20, after=after)
        pages.append(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    # then every card is seen once, oldest (lowest id) first
    seen = [int(node["id"]) for page in pages for node in page["nodes"]]
    assert [len(page["nodes"]) for page in pages] == [20, 20, 5]
    assert seen == sorted(seen)
    assert len(set(seen)) == 45
    assert [page["totalCount"] for page in pages] == [45, 45, 45]
    assert [page["pageInfo"]["hasPreviousPage"] for page in pages] == [False, True, True]
    for page in pages:
        for node in page["nodes"]:
            assert MASKED_CODE.match(node["maskedCode"]), node
            assert (node["status"], node["remark"], node["expired"], node["batch"]) == (
                "UNUSED",
                None,
                False,
                {"id": batch["id"]},
            )


async def test_offset_jumps_to_a_page_of_cards(gql, catalog, admin):
    batch = await create_batch(gql, admin, quantity=45)
    every = [node["id"] for node in await _all_cards(gql, admin, batch["id"])]

    tail = await _cards(gql, admin, batch["id"], first=20, offset=40)
    middle = await _cards(gql, admin, batch["id"], first=10, offset=20)
    beyond = await _cards(gql, admin, batch["id"], first=10, offset=45)

    assert [node["id"] for node in tail["nodes"]] == every[40:]
    assert tail["totalCount"] == 45
    assert (tail["pageInfo"]["hasPreviousPage"], tail["pageInfo"]["hasNextPage"]) == (True, False)
    assert [node["id"] for node in middle["nodes"]] == every[20:30]
    assert (middle["pageInfo"]["hasPreviousPage"], middle["pageInfo"]["hasNextPage"]) == (True, True)
    assert (beyond["nodes"], beyond["pageInfo"]["hasNextPage"]) == ([], False)
    # and a page reached by offset can be continued with its cursor
    after_tail_start = await _cards(gql, admin, batch["id"], first=3, after=middle["pageInfo"]["endCursor"])
    assert [node["id"] for node in after_tail_start["nodes"]] == every[30:33]


async def test_cards_filter_by_status(gql, catalog, admin):
    # given a batch of 45 with three cards disabled
    batch = await create_batch(gql, admin, quantity=45)
    every = [node["id"] for node in await _all_cards(gql, admin, batch["id"])]
    disabled = [every[2], every[5], every[44]]
    for card_id in disabled:
        result = await gql(SET_CARD_STATUS, {"id": card_id, "status": "DISABLED"}, user=admin)
        assert result["data"]["setCardStatus"]["__typename"] == "SetCardStatusSuccess", result

    # then each status lists exactly its cards, counted
    disabled_page = await _cards(gql, admin, batch["id"], first=100, status="DISABLED")
    unused_page = await _cards(gql, admin, batch["id"], first=100, status="UNUSED")
    used_page = await _cards(gql, admin, batch["id"], first=100, status="USED")
    assert [node["id"] for node in disabled_page["nodes"]] == disabled
    assert {node["status"] for node in disabled_page["nodes"]} == {"DISABLED"}
    assert disabled_page["totalCount"] == 3
    assert [node["id"] for node in unused_page["nodes"]] == [i for i in every if i not in disabled]
    assert unused_page["totalCount"] == 42
    assert (used_page["nodes"], used_page["totalCount"]) == ([], 0)
    # and paging within a status works with after and with offset
    first_unused = await _cards(gql, admin, batch["id"], first=5, status="UNUSED")
    next_unused = await _cards(
        gql, admin, batch["id"], first=5, status="UNUSED", after=first_unused["pageInfo"]["endCursor"]
    )
    jumped = await _cards(gql, admin, batch["id"], first=5, status="UNUSED", offset=40)
    unused = [i for i in every if i not in disabled]
    assert [node["id"] for node in first_unused["nodes"]] == unused[:5]
    assert [node["id"] for node in next_unused["nodes"]] == unused[5:10]
    assert [node["id"] for node in jumped["nodes"]] == unused[40:]
    assert (jumped["totalCount"], jumped["pageInfo"]["hasNextPage"]) == (42, False)


async def test_cards_keyword_finds_by_last_four_symbols(gql, catalog, admin):
    batch = await create_batch(gql, admin, quantity=45)
    every = await _all_cards(gql, admin, batch["id"])
    wanted = every[17]
    last4 = wanted["maskedCode"][-4:]
    sharing = [node["id"] for node in every if node["maskedCode"][-4:] == last4]

    found = await _cards(gql, admin, batch["id"], first=100, keyword=last4)
    lower = await _cards(gql, admin, batch["id"], first=100, keyword=f" {last4.lower()} ")

    assert [node["id"] for node in found["nodes"]] == sharing
    assert wanted["id"] in sharing
    assert found["totalCount"] == len(sharing)
    assert [node["id"] for node in lower["nodes"]] == sharing


async def test_cards_keyword_finds_a_whole_code(gql, client, catalog, admin):
    # given a batch and its codes, downloaded
    batch = await create_batch(gql, admin, quantity=45)
    every = await _all_cards(gql, admin, batch["id"])
    codes = await download_codes(gql, client, admin, batch["id"])

    # when an admin searches for whole codes, however typed
    for index in (0, 23, 44):
        for typed in (codes[index], codes[index].replace("-", "").lower(), codes[index].replace("-", " ")):
            found = await _cards(gql, admin, batch["id"], first=100, keyword=typed)
            # then exactly that card is found
            assert [node["id"] for node in found["nodes"]] == [every[index]["id"]], typed
            assert found["totalCount"] == 1


async def test_a_whole_code_of_another_batch_finds_nothing(gql, client, catalog, admin):
    mine = await create_batch(gql, admin, quantity=3)
    other = await create_batch(gql, admin, quantity=3)
    [code, *_] = await download_codes(gql, client, admin, other["id"])

    found = await _cards(gql, admin, mine["id"], first=100, keyword=code)

    assert (found["nodes"], found["totalCount"]) == ([], 0)


@pytest.mark.parametrize(
    "keyword",
    [
        "hello world",  # not a code, not 4 symbols
        "ABCDE",  # 5 symbols: not the last 4, not a whole code
        "7K3Q-Z9M2-XW4R-T8H0",  # a whole code with a bad check symbol
        "UUUU",  # U is no symbol of the alphabet
    ],
)
async def test_a_keyword_that_is_neither_last_four_nor_a_code_finds_nothing(gql, catalog, admin, keyword):
    batch = await create_batch(gql, admin, quantity=45)

    found = await _cards(gql, admin, batch["id"], first=100, keyword=keyword)

    assert (found["nodes"], found["totalCount"], found["pageInfo"]["hasNextPage"]) == ([], 0, False)


async def test_like_wildcards_in_a_card_keyword_match_nothing(gql, catalog, admin):
    # given a batch of 45 cards
    batch = await create_batch(gql, admin, quantity=45)

    # when the keyword is made of SQL LIKE wildcards (no code has them among its symbols)
    found = {
        keyword: await _cards(gql, admin, batch["id"], first=100, keyword=keyword)
        for keyword in ("%", "_", "%%%%", "__")
    }

    # then no card matches, as for any other keyword that is neither the last 4 symbols nor a code
    assert {keyword: (page["totalCount"], len(page["nodes"])) for keyword, page in found.items()} == {
        "%": (0, 0),
        "_": (0, 0),
        "%%%%": (0, 0),
        "__": (0, 0),
    }


async def test_a_card_expires_after_the_end_of_its_validity_day_in_shanghai(gql, clock, catalog, admin):
    # given a batch valid until 2026-07-01 (Shanghai)
    clock.set(JUST_PAST_MIDNIGHT_IN_SHANGHAI)
    batch = await create_batch(gql, admin, quantity=2, valid_until="2026-07-01")

    async def expired() -> list[bool]:
        return [node["expired"] for node in await _all_cards(gql, admin, batch["id"])]

    # then its cards are good through 23:59:59 that day in Shanghai, and expired from midnight on
    assert await expired() == [False, False]
    clock.set(datetime(2026, 7, 1, 15, 59, 59, tzinfo=UTC))
    assert await expired() == [False, False]
    clock.set(datetime(2026, 7, 1, 16, 0, 0, tzinfo=UTC))
    assert await expired() == [True, True]


async def test_bad_paging_arguments_on_cards_are_top_level_invalid_input(gql, catalog, admin):
    batch = await create_batch(gql, admin, quantity=3)
    cursor = (await _cards(gql, admin, batch["id"], first=1))["pageInfo"]["endCursor"]
    batch_cursor = (await gql(BATCHES, {"first": 1}, user=admin))["data"]["cardBatches"]["pageInfo"][
        "endCursor"
    ]
    cases = [
        ({"first": 0}, "first 必须在 1 到 100 之间。"),
        ({"first": 101}, "first 必须在 1 到 100 之间。"),
        ({"offset": -1}, "offset 不能为负数。"),
        ({"offset": 1, "after": cursor}, "offset 不能与 after 同时使用。"),
        ({"after": "garbage"}, "游标无效。"),
        ({"after": batch_cursor}, "游标无效。"),
    ]

    for variables, message in cases:
        result = await gql(CARDS, {"id": batch["id"], **variables}, user=admin)
        # cardBatch is nullable: the error nulls it
        assert result["data"] == {"cardBatch": None}, variables
        assert _top_level(result) == [(["cardBatch", "cards"], "INVALID_INPUT", message)], variables


# ---------------------------------------------------------------- batch status


async def test_set_card_batch_status_disables_and_enables_with_audit(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin)

    disabled = await gql(SET_BATCH_STATUS, {"id": batch["id"], "status": "DISABLED"}, user=admin)
    enabled = await gql(SET_BATCH_STATUS, {"id": batch["id"], "status": "ACTIVE"}, user=admin)

    assert disabled == {
        "data": {
            "setCardBatchStatus": {
                "__typename": "SetCardBatchStatusSuccess",
                "batch": {"id": batch["id"], "status": "DISABLED"},
            }
        }
    }
    assert enabled["data"]["setCardBatchStatus"]["batch"] == {"id": batch["id"], "status": "ACTIVE"}
    entries = await audit_rows(rt, "batch.set_status")
    assert [(e.entity, e.entity_id, e.actor_id, e.client_address, e.old, e.new) for e in entries] == [
        ("batch", batch["id"], admin.id, CLIENT_ADDRESS, {"status": "ACTIVE"}, {"status": "DISABLED"}),
        ("batch", batch["id"], admin.id, CLIENT_ADDRESS, {"status": "DISABLED"}, {"status": "ACTIVE"}),
    ]


async def test_setting_the_batch_status_it_has_writes_nothing(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin)
    before = await snapshot(rt, batch["id"])

    result = await gql(SET_BATCH_STATUS, {"id": batch["id"], "status": "ACTIVE"}, user=admin)

    assert result["data"]["setCardBatchStatus"] == {
        "__typename": "SetCardBatchStatusSuccess",
        "batch": {"id": batch["id"], "status": "ACTIVE"},
    }
    assert await snapshot(rt, batch["id"]) == before


async def test_set_card_batch_status_of_an_unknown_batch_is_not_found(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin)
    before = await snapshot(rt, batch["id"])

    for unknown in ("999999", "abc"):
        result = await gql(SET_BATCH_STATUS, {"id": unknown, "status": "DISABLED"}, user=admin)
        assert result == {"data": {"setCardBatchStatus": NOT_FOUND}}

    assert await snapshot(rt, batch["id"]) == before


# ---------------------------------------------------------------- card status


async def test_set_card_status_disables_and_enables_and_counts(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=3)
    card = (await _all_cards(gql, admin, batch["id"]))[1]

    disabled = await gql(SET_CARD_STATUS, {"id": card["id"], "status": "DISABLED"}, user=admin)
    enabled = await gql(SET_CARD_STATUS, {"id": card["id"], "status": "UNUSED"}, user=admin)

    assert disabled == {
        "data": {
            "setCardStatus": {
                "__typename": "SetCardStatusSuccess",
                "card": {
                    "id": card["id"],
                    "status": "DISABLED",
                    "batch": {"id": batch["id"], "disabledCount": 1, "usedCount": 0},
                },
            }
        }
    }
    assert enabled["data"]["setCardStatus"]["card"] == {
        "id": card["id"],
        "status": "UNUSED",
        "batch": {"id": batch["id"], "disabledCount": 0, "usedCount": 0},
    }
    entries = await audit_rows(rt, "card.set_status")
    assert [(e.entity, e.entity_id, e.actor_id, e.client_address, e.old, e.new) for e in entries] == [
        ("card", card["id"], admin.id, CLIENT_ADDRESS, {"status": "UNUSED"}, {"status": "DISABLED"}),
        ("card", card["id"], admin.id, CLIENT_ADDRESS, {"status": "DISABLED"}, {"status": "UNUSED"}),
    ]


async def test_setting_the_card_status_it_has_writes_nothing(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=2)
    card = (await _all_cards(gql, admin, batch["id"]))[0]
    before = await snapshot(rt, batch["id"])

    result = await gql(SET_CARD_STATUS, {"id": card["id"], "status": "UNUSED"}, user=admin)

    assert result["data"]["setCardStatus"]["card"]["status"] == "UNUSED"
    assert await snapshot(rt, batch["id"]) == before


async def test_a_used_card_cannot_be_disabled_or_enabled(gql, rt, clock, catalog, admin, member):
    # given a card a member has used
    clock.set(JUST_PAST_MIDNIGHT_IN_SHANGHAI)
    batch = await create_batch(gql, admin, quantity=2)
    card = (await _all_cards(gql, admin, batch["id"]))[0]
    await _use_card(rt, card["id"], member.id, clock())
    before = await snapshot(rt, batch["id"])

    # when an admin tries to change its status, to anything
    for status in ("DISABLED", "UNUSED", "USED"):
        result = await gql(SET_CARD_STATUS, {"id": card["id"], "status": status}, user=admin)

        # then it is refused and nothing changed
        assert result == {
            "data": {
                "setCardStatus": {
                    "__typename": "InvalidStateError",
                    "code": "INVALID_STATE",
                    "message": "已使用的提货卡不能禁用或启用。",
                }
            }
        }, status
    assert await snapshot(rt, batch["id"]) == before
    used = (await _all_cards(gql, admin, batch["id"]))[0]
    assert (used["status"], before["batch"]["used_count"]) == ("USED", 1)


async def test_a_card_cannot_be_set_used_by_an_admin(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=2)
    [unused, disabled] = await _all_cards(gql, admin, batch["id"])
    await gql(SET_CARD_STATUS, {"id": disabled["id"], "status": "DISABLED"}, user=admin)
    before = await snapshot(rt, batch["id"])

    for card in (unused, disabled):
        result = await gql(SET_CARD_STATUS, {"id": card["id"], "status": "USED"}, user=admin)
        assert result == {
            "data": {
                "setCardStatus": {
                    "__typename": "InvalidStateError",
                    "code": "INVALID_STATE",
                    "message": "提货卡状态只能在未使用与禁用之间切换。",
                }
            }
        }

    assert await snapshot(rt, batch["id"]) == before


async def test_set_card_status_of_an_unknown_card_is_not_found(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin)
    before = await snapshot(rt, batch["id"])

    for unknown in ("999999", "abc"):
        result = await gql(SET_CARD_STATUS, {"id": unknown, "status": "DISABLED"}, user=admin)
        assert result == {"data": {"setCardStatus": NOT_FOUND}}

    assert await snapshot(rt, batch["id"]) == before


# ---------------------------------------------------------------- card remark


async def test_set_card_remark_sets_changes_and_clears_with_audit(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=2)
    card = (await _all_cards(gql, admin, batch["id"]))[0]

    results = [
        (await gql(SET_CARD_REMARK, {"id": card["id"], "remark": remark}, user=admin))["data"][
            "setCardRemark"
        ]
        for remark in ("给张三", "给李四", "")
    ]

    assert [r["card"] for r in results] == [
        {"id": card["id"], "remark": "给张三"},
        {"id": card["id"], "remark": "给李四"},
        {"id": card["id"], "remark": None},
    ]
    assert [node["remark"] for node in await _all_cards(gql, admin, batch["id"])] == [None, None]
    entries = await audit_rows(rt, "card.set_remark")
    assert [(e.entity, e.entity_id, e.actor_id, e.client_address, e.old, e.new) for e in entries] == [
        ("card", card["id"], admin.id, CLIENT_ADDRESS, {"remark": None}, {"remark": "给张三"}),
        ("card", card["id"], admin.id, CLIENT_ADDRESS, {"remark": "给张三"}, {"remark": "给李四"}),
        ("card", card["id"], admin.id, CLIENT_ADDRESS, {"remark": "给李四"}, {"remark": None}),
    ]


async def test_a_remark_of_500_characters_is_kept_and_501_refused(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=2)
    card = (await _all_cards(gql, admin, batch["id"]))[0]
    kept = await gql(SET_CARD_REMARK, {"id": card["id"], "remark": "备" * 500}, user=admin)
    assert kept["data"]["setCardRemark"]["card"]["remark"] == "备" * 500
    before = await snapshot(rt, batch["id"])

    refused = await gql(SET_CARD_REMARK, {"id": card["id"], "remark": "注" * 501}, user=admin)

    assert refused == {"data": {"setCardRemark": _invalid(("remark", "不能超过 500 个字符。"))}}
    assert await snapshot(rt, batch["id"]) == before
    assert (await _all_cards(gql, admin, batch["id"]))[0]["remark"] == "备" * 500


async def test_the_same_remark_again_writes_nothing(gql, rt, catalog, admin):
    # given one card with a remark and one without
    batch = await create_batch(gql, admin, quantity=2)
    [card, bare] = await _all_cards(gql, admin, batch["id"])
    await gql(SET_CARD_REMARK, {"id": card["id"], "remark": "给张三"}, user=admin)
    before = await snapshot(rt, batch["id"])

    # when the same remark is set again, and the empty remark is cleared again
    again = await gql(SET_CARD_REMARK, {"id": card["id"], "remark": "给张三"}, user=admin)
    cleared = await gql(SET_CARD_REMARK, {"id": bare["id"], "remark": ""}, user=admin)

    # then both succeed and nothing is written, not even an audit row
    assert again["data"]["setCardRemark"]["card"] == {"id": card["id"], "remark": "给张三"}
    assert cleared["data"]["setCardRemark"]["card"] == {"id": bare["id"], "remark": None}
    assert await snapshot(rt, batch["id"]) == before


async def test_set_card_remark_of_an_unknown_card_is_not_found(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin)
    before = await snapshot(rt, batch["id"])

    for unknown in ("999999", "abc"):
        result = await gql(SET_CARD_REMARK, {"id": unknown, "remark": "x"}, user=admin)
        assert result == {"data": {"setCardRemark": NOT_FOUND}}

    assert await snapshot(rt, batch["id"]) == before


async def test_row_counts_helper_sees_the_tables(rt, gql, catalog, admin):
    # guards the "nothing changed" checks above: the counts do move when something is written
    before = await row_counts(rt)
    await create_batch(gql, admin, quantity=2)
    after = await row_counts(rt)

    assert {table: after[table] - before[table] for table in after} == {
        "card_batches": 1,
        "cards": 2,
        "audit_log": 1,
        "card_batch_downloads": 0,
    }
