"""Lists cost a fixed number of SQL statements, whatever their length (STYLE.md, "Sessions and
loaders"): related fields go through DataLoaders, counts come from counters where they can."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from tests.factories import create_batch

BATCHES = """
query {
  cardBatches(first: 50) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      id batchNo name productType referencePrice quantity usedCount disabledCount downloadCount
      validUntil status createdAt
      config { productType regionName lineName months cpuCores summary }
    }
  }
}
"""
BATCH_CARDS = """
query ($id: ID!) {
  cardBatch(id: $id) {
    id batchNo
    cards(first: 50) {
      totalCount
      pageInfo { hasNextPage endCursor }
      nodes { id maskedCode status remark expired batch { id batchNo } }
    }
  }
}
"""
# Transaction control is left out: SQLite's BEGIN goes through the cursor, asyncpg's does not, and
# the counts must be the same on both back-ends.
TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


@contextmanager
def counted_statements(rt) -> Iterator[list[str]]:
    """The SQL statements run meanwhile, on the read and the write engine (one engine on PostgreSQL)."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if not TRANSACTION_CONTROL.match(statement):
            statements.append(statement)

    engines = {id(engine.sync_engine): engine.sync_engine for engine in (rt.db.engine, rt.db.write_engine)}
    for engine in engines.values():
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        for engine in engines.values():
            event.remove(engine, "before_cursor_execute", count)


async def test_listing_batches_costs_the_same_for_3_and_50(gql, rt, catalog, admin):
    # given 3 batches
    for index in range(3):
        await create_batch(gql, admin, name=f"b{index}")
    with counted_statements(rt) as for_3:
        few = await gql(BATCHES, user=admin)

    # and then 50
    for index in range(3, 50):
        await create_batch(gql, admin, name=f"b{index}")
    with counted_statements(rt) as for_50:
        many = await gql(BATCHES, user=admin)

    # then both pages cost the same 2 statements: the filtered count and the page itself (the
    # bearer token's user was read by the admin's earlier requests and is remembered for
    # token_cache_seconds)
    assert len(few["data"]["cardBatches"]["nodes"]) == 3
    assert len(many["data"]["cardBatches"]["nodes"]) == 50
    assert len(for_3) == len(for_50) == 2, for_50


async def test_listing_a_batchs_cards_costs_the_same_for_1_and_50(gql, rt, catalog, admin):
    # given a batch of 1 card and a batch of 50
    one = await create_batch(gql, admin, quantity=1)
    fifty = await create_batch(gql, admin, quantity=50)

    with counted_statements(rt) as for_1:
        small = await gql(BATCH_CARDS, {"id": one["id"]}, user=admin)
    with counted_statements(rt) as for_50:
        large = await gql(BATCH_CARDS, {"id": fifty["id"]}, user=admin)

    # then both cost the same 2 statements: the batch and the page of cards; each card's batch
    # (and its expiry) comes from the batch already read, the total from the batch's counters,
    # and the token's user from the short viewer cache
    assert len(small["data"]["cardBatch"]["cards"]["nodes"]) == 1
    assert len(large["data"]["cardBatch"]["cards"]["nodes"]) == 50
    assert {node["batch"]["id"] for node in large["data"]["cardBatch"]["cards"]["nodes"]} == {fifty["id"]}
    assert len(for_1) == len(for_50) == 2, for_50


async def test_a_signed_out_request_costs_no_statement(gql, rt, catalog, admin):
    # without a token there is no user to read, and the refusal happens before any query
    with counted_statements(rt) as statements:
        result = await gql(BATCHES)

    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert statements == []


REDEMPTIONS = """
query {
  redemptions(first: 50) {
    totalCount
    nodes {
      id memberId cardName redeemedAt
      batch { id batchNo }
      card { id maskedCode expired order { id } }
      order { id status osImage { name } instance { id } card { id } }
    }
  }
}
"""
ORDERS = """
query {
  orders(first: 50) {
    totalCount
    nodes { id orderNo status osImage { name } instance { id } card { id maskedCode batch { id } } }
  }
}
"""
REDEEM = """
mutation ($input: RedeemCardInput!) { redeemCard(input: $input) { __typename } }
"""


async def _redeem_all(gql, client, admin, member, count: int) -> None:
    from tests.api.test_redemption import image_ids
    from tests.factories import download_codes

    batch = await create_batch(gql, admin, quantity=count)
    centos = (await image_ids(gql, member))[("sh-bgp", "CentOS 7.9 x64")]
    for code in await download_codes(gql, client, admin, batch["id"]):
        result = await gql(REDEEM, {"input": {"code": code, "osImageId": centos}}, user=member)
        assert result["data"]["redeemCard"]["__typename"] == "RedeemCardSuccess"


async def test_the_usage_log_and_orders_cost_the_same_for_2_and_12(gql, client, rt, catalog, admin, member):
    await _redeem_all(gql, client, admin, member, 2)
    with counted_statements(rt) as log_2:
        few = await gql(REDEMPTIONS, user=admin)
    with counted_statements(rt) as orders_2:
        await gql(ORDERS, user=admin)

    await _redeem_all(gql, client, admin, member, 10)
    with counted_statements(rt) as log_12:
        many = await gql(REDEMPTIONS, user=admin)
    with counted_statements(rt) as orders_12:
        await gql(ORDERS, user=admin)

    # the log: count, page, then one batch each for batches, cards, orders by id, orders by card,
    # images and instances (8); orders: count, page, images, instances, cards, batches (6);
    # the same whatever the page holds
    assert (few["data"]["redemptions"]["totalCount"], many["data"]["redemptions"]["totalCount"]) == (2, 12)
    assert len(log_2) == len(log_12), log_12
    assert len(orders_2) == len(orders_12), orders_12
    assert (len(log_12), len(orders_12)) == (8, 6), (log_12, orders_12)
