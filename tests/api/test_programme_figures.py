"""Figures (RULES-v2 §5) exact and from counters: a batch's unused, expired, redeemed and outstanding
values, the programme's stats, the expiringWithinDays filter, day ranges checked; and the audit
trail: newest first, filters, keyset pages, values free of codes and passwords."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from tests.api.test_query_counts import counted_statements
from tests.api.test_redemption import REDEEM, image_ids
from tests.factories import create_batch, download_codes, snapshot

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 on 2026-12-02 in Shanghai
FIGURES = """query ($id: ID!) { cardBatch(id: $id) { quantity usedCount disabledCount referencePrice
  unusedCount expiredCount redeemedValue outstandingValue } }"""
STATS = """query { cardProgrammeStats { activeBatches cardsIssued cardsUsed outstandingValue
  redeemedValue(from: "2026-12-01", to: "2026-12-31")
  redemptionsByDay(from: "2026-12-01", to: "2026-12-03") { day count } } }"""
EXPIRING = "query ($d: Int!) { cardBatches(filter: {expiringWithinDays: $d}) { totalCount nodes { name } } }"
AUDIT = """query ($filter: AuditFilter, $first: Int, $after: String) { auditLog(filter: $filter, first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor } nodes { id action entity entityId actorId actorName oldValues newValues clientAddress } } }"""


async def _used(gql, client, admin, member, batch, count: int) -> list[str]:
    codes = await download_codes(gql, client, admin, batch["id"])
    os_id = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    for code in codes[:count]:
        assert (await gql(REDEEM, {"input": {"code": code, "osImageId": os_id}}, user=member))["data"][
            "redeemCard"
        ]["__typename"] == "RedeemCardSuccess"
    return codes


async def test_a_batchs_figures_come_from_its_counters_and_its_last_day(
    gql, client, rt, clock, catalog, admin, member
):
    # given 10 cards at 83.66, 2 used and 1 disabled, valid until 2026-12-31
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=10, valid_until="2026-12-31")
    await _used(gql, client, admin, member, batch, 2)
    await gql(
        "mutation ($r: CardRange!) { setCardRangeStatus(range: $r, status: DISABLED) { __typename } }",
        {"r": {"batchId": batch["id"], "fromSeq": 10, "toSeq": 10}},
        user=admin,
    )

    # when the figures are read, no statement touches the cards
    with counted_statements(rt) as statements:
        figures = (await gql(FIGURES, {"id": batch["id"]}, user=admin))["data"]["cardBatch"]

    assert figures == {
        "quantity": 10,
        "usedCount": 2,
        "disabledCount": 1,
        "referencePrice": "83.66",
        "unusedCount": 7,
        "expiredCount": 0,
        "redeemedValue": "167.32",
        "outstandingValue": "585.62",
    }
    assert not [s for s in statements if "FROM cards" in s], statements

    # and past its last day in Shanghai the unused cards are expired, no longer outstanding
    clock.set(datetime(2026, 12, 31, 16, 0, tzinfo=UTC))
    late = (await gql(FIGURES, {"id": batch["id"]}, user=admin))["data"]["cardBatch"]
    assert (late["unusedCount"], late["expiredCount"], late["outstandingValue"], late["redeemedValue"]) == (
        0,
        7,
        "0.00",
        "167.32",
    )


async def test_programme_stats_add_every_batch_up_exactly(gql, client, rt, clock, catalog, admin, member):
    clock.set(NOW)
    first = await create_batch(gql, admin, quantity=4, valid_until="2026-12-31")
    await create_batch(gql, admin, quantity=3, valid_until="2026-12-02", name="ends today")
    await create_batch(gql, admin, quantity=5, status="DISABLED", name="disabled")
    await _used(gql, client, admin, member, first, 3)

    stats = (await gql(STATS, user=admin))["data"]["cardProgrammeStats"]

    # outstanding: (4-3 + 3 + 5) unused, unexpired cards at 83.66
    assert stats == {
        "activeBatches": 2,
        "cardsIssued": 12,
        "cardsUsed": 3,
        "outstandingValue": "752.94",
        "redeemedValue": "250.98",
        "redemptionsByDay": [
            {"day": "2026-12-01", "count": 0},
            {"day": "2026-12-02", "count": 3},
            {"day": "2026-12-03", "count": 0},
        ],
    }
    # expiring: ACTIVE batches whose last day is within the window
    assert (await gql(EXPIRING, {"d": 0}, user=admin))["data"]["cardBatches"] == {
        "totalCount": 1,
        "nodes": [{"name": "ends today"}],
    }
    assert (await gql(EXPIRING, {"d": 29}, user=admin))["data"]["cardBatches"]["totalCount"] == 2
    refused = await gql(EXPIRING, {"d": -1}, user=admin)
    assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_a_day_range_of_more_than_366_days_or_backwards_is_a_malformed_request(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=1)
    query = "query ($id: ID!, $f: Date!, $t: Date!) { cardBatch(id: $id) { redemptionsByDay(from: $f, to: $t) { day } } }"
    for f, t in [("2026-01-01", "2027-01-02"), ("2026-02-01", "2026-01-31")]:
        result = await gql(query, {"id": batch["id"], "f": f, "t": t}, user=admin)
        assert result["data"] == {"cardBatch": None}, result
        [error] = result["errors"]
        assert (error["extensions"]["code"], error["path"]) == (
            "INVALID_INPUT",
            ["cardBatch", "redemptionsByDay"],
        )
    longest = await gql(query, {"id": batch["id"], "f": "2028-01-01", "t": "2028-12-31"}, user=admin)
    assert len(longest["data"]["cardBatch"]["redemptionsByDay"]) == 366


async def test_the_audit_log_lists_every_write_newest_first_with_filters_and_pages(
    gql, client, rt, clock, catalog, admin, member
):
    clock.set(NOW)
    batch = await create_batch(gql, admin, quantity=3)
    codes = await download_codes(gql, client, admin, batch["id"])
    await gql(
        "mutation ($n: String!) { createChannel(name: $n) { __typename } }", {"n": "Reseller A"}, user=admin
    )
    changed = await gql(
        'mutation ($old: String!) { changePassword(input: {oldPassword: $old, newPassword: "a brand new secret 42"})'
        " { __typename ... on ChangePasswordSuccess { token } } }",
        {"old": admin.password},
        user=admin,
    )
    assert changed["data"]["changePassword"]["__typename"] == "ChangePasswordSuccess", changed
    # the change ends the old token: from here on, the new one
    admin = replace(admin, token=changed["data"]["changePassword"]["token"])

    everything = (await gql(AUDIT, {"first": 100}, user=admin))["data"]["auditLog"]

    assert [n["action"] for n in everything["nodes"]] == [
        "user.change_password",
        "channel.create",
        "batch.create_download",
        "batch.create",
    ]
    assert everything["totalCount"] == 4
    ids = [int(n["id"]) for n in everything["nodes"]]
    assert ids == sorted(ids, reverse=True)
    created = everything["nodes"][-1]
    assert (created["entity"], created["entityId"], created["actorId"], created["actorName"]) == (
        "batch",
        batch["id"],
        str(admin.id),
        "admin",
    )
    assert json.loads(created["newValues"])["quantity"] == 3 and created["oldValues"] is None
    text = json.dumps(everything)
    for secret in [
        *codes,
        *(code.replace("-", "") for code in codes),
        admin.password,
        "a brand new secret 42",
    ]:
        assert secret not in text

    # pages by keyset
    page = (await gql(AUDIT, {"first": 3}, user=admin))["data"]["auditLog"]
    rest = (await gql(AUDIT, {"first": 3, "after": page["pageInfo"]["endCursor"]}, user=admin))["data"][
        "auditLog"
    ]
    assert [n["id"] for n in page["nodes"] + rest["nodes"]] == [n["id"] for n in everything["nodes"]]
    assert (page["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasNextPage"]) == (True, False)

    # filters
    async def actions(**filter: str) -> list[str]:
        found = (await gql(AUDIT, {"filter": filter}, user=admin))["data"]["auditLog"]
        return [n["action"] for n in found["nodes"]]

    assert await actions(entity="batch") == ["batch.create_download", "batch.create"]
    assert await actions(action="channel.create") == ["channel.create"]
    assert await actions(entity="batch", entityId=batch["id"], actorId=str(admin.id)) == [
        "batch.create_download",
        "batch.create",
    ]
    assert await actions(actorId="999999") == []
    assert await actions(**{"from": "2026-12-02", "to": "2026-12-02"}) == [
        n["action"] for n in everything["nodes"]
    ]
    assert await actions(**{"from": "2026-12-03"}) == []
    assert await actions(to="2026-12-01") == []
    assert (await snapshot(rt))["rows"]["audit_log"] == 4
