"""Limits that protect everyone (RULES-v2 §7): a query's cost, counted before it runs and with
introspection in it; introspection only for the signed in when so set; a time limit per request and
a statement timeout on PostgreSQL; the document cache bounded."""

from __future__ import annotations

import asyncio

import pytest
from graphql import get_introspection_query
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core.db import Database
from schema import documents
from services import cards as catalog_cards
from services import catalog
from tests.factories import create_batch

FAN_OUT = """query ($id: ID!, $n: Int) { cardBatch(id: $id) { cards(first: $n) { nodes { batch {
  cards(first: $n) { nodes { batch { cards(first: $n) { nodes { id } } } } } } } } } }"""
# what an admin dashboard asks for a batch page: every card with its order and instance
CARD_PAGE = """query ($id: ID!) { cardBatch(id: $id) { id batchNo name config { summary regionName }
  cards(first: 100) { totalCount pageInfo { hasNextPage endCursor } nodes { id maskedCode status
  expired remark usedAt memberId order { id orderNo status osImage { id name } instance { id ipAddress
  status expiresAt } } } } } }"""
INTROSPECTION = get_introspection_query(descriptions=True, input_value_deprecation=True)


def _two_introspections() -> str:
    operation, fragments = INTROSPECTION.split("fragment", 1)
    inner = operation.split("{", 1)[1].rsplit("}", 1)[0]
    return f"query {{ a: {inner.strip()} b: {inner.strip()} }}\nfragment{fragments}"


async def test_a_fan_out_of_nested_lists_is_refused_before_it_runs(gql, catalog, admin, monkeypatch):
    batch = await create_batch(gql, admin, quantity=3)
    listed = []
    original = catalog_cards.list_cards

    async def counting(*args, **kwargs):
        listed.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(catalog_cards, "list_cards", counting)

    refused = await gql(FAN_OUT, {"id": batch["id"], "n": 100}, user=admin)
    allowed = await gql(FAN_OUT, {"id": batch["id"], "n": 3}, user=admin)

    assert refused["data"] is None
    [error] = refused["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 3030301, "maxCost": 60000}
    assert error["message"] == "查询过于复杂（成本 3030301，上限 60000），请减少字段或列表大小。"
    # the same document with small pages is cheap: the cost follows the variables, not the text
    assert "errors" not in allowed, allowed
    nodes = allowed["data"]["cardBatch"]["cards"]["nodes"]
    assert len(nodes) == 3 and len(nodes[0]["batch"]["cards"]["nodes"]) == 3
    # the refused one listed nothing; the allowed one 1 + 3 + 9 times
    assert len(listed) == 13


async def test_a_full_page_of_cards_with_their_orders_fits(gql, catalog, admin):
    batch = await create_batch(gql, admin, quantity=2)

    result = await gql(CARD_PAGE, {"id": batch["id"]}, user=admin)

    assert "errors" not in result, result
    assert result["data"]["cardBatch"]["cards"]["totalCount"] == 2


async def test_one_introspection_is_allowed_signed_out_and_two_are_too_complex(gql):
    one = await gql(INTROSPECTION)
    two = await gql(_two_introspections())

    assert "errors" not in one
    assert one["data"]["__schema"]["queryType"] == {"name": "Query", "kind": "OBJECT"}
    assert two["data"] is None
    assert [e["extensions"]["code"] for e in two["errors"]] == ["QUERY_TOO_COMPLEX"]


async def test_introspection_can_be_kept_for_the_signed_in(rt, member):
    from httpx import ASGITransport, AsyncClient

    from tests.conftest import GraphQLClient
    from tihuo.app import create_app

    rt.settings = rt.settings.model_copy(update={"introspection": "signed-in"})
    transport = ASGITransport(app=create_app(runtime=rt))
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        gql = GraphQLClient(http)
        signed_out = await gql("query { __schema { queryType { name } } }", headers={"Accept-Language": "en"})
        nested = await gql('query { me { id } __type(name: "Card") { name } }')
        typename = await gql("query { __typename }")
        signed_in = await gql("query { __schema { queryType { name } } }", user=member)

    assert signed_out == {
        "data": None,
        "errors": [
            {
                "message": "Sign in to introspect the schema.",
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }
    assert [e["extensions"]["code"] for e in nested["errors"]] == ["UNAUTHENTICATED"]
    assert typename == {"data": {"__typename": "Query"}}
    assert signed_in == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_a_request_past_its_time_limit_is_stopped(gql, rt, member, monkeypatch):
    rt.settings = rt.settings.model_copy(update={"request_timeout_seconds": 0.2})

    async def slow(*args, **kwargs):
        await asyncio.sleep(5)
        return []

    monkeypatch.setattr(catalog, "browse_regions", slow)

    result = await gql("query { regions { id } }", user=member, headers={"Accept-Language": "en"})

    assert result == {
        "data": None,
        "errors": [
            {
                "message": "The request took longer than 0.2 seconds and was stopped.",
                "extensions": {"code": "REQUEST_TIMEOUT"},
            }
        ],
    }


@pytest.mark.postgres
async def test_postgresql_stops_a_statement_past_the_statement_timeout(settings):
    database = Database(settings.resolved_database_url, statement_timeout_ms=200)
    try:
        async with database.read() as session:
            with pytest.raises(DBAPIError, match="statement timeout"):
                await session.execute(text("SELECT pg_sleep(2)"))
        # and the hot path's own pool too
        with pytest.raises(Exception, match="statement timeout"):
            await database.run_read(_sleeping_plan)
    finally:
        await database.dispose()


def _sleeping_plan(codec):
    from core.sql import Sql

    rows = yield Sql(text("SELECT pg_sleep(2)"), reads_only=True), {}
    return rows


def test_long_documents_are_never_kept_and_the_cache_is_bounded_by_bytes(rt):
    cache = documents.DocumentCache(extra_rules=[], max_tokens=5000)
    long_text = "query { me { id } }" + " " * documents.CACHEABLE_BYTES
    short_text = "query { me { id } }"

    for n in range(5):
        cache.get(long_text + "#" * n)
    cache.get(short_text)

    assert list(cache._kept.values()) == [cache.get(short_text)]
    assert cache._kept.maxsize == documents.CACHE_BUDGET_BYTES
    assert cache._kept.currsize == len(short_text) * (1 + documents.TREE_BYTES_PER_CHARACTER)


async def test_introspection_beside_data_fields_is_refused(gql, member):
    mixed = await gql("query { me { id } __schema { queryType { name } } }", user=member)
    with_typename = await gql("query { __typename __schema { queryType { name } } }", user=member)

    assert mixed["data"] is None
    assert [e["extensions"]["code"] for e in mixed["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]
    assert mixed["errors"][0]["message"] == "__schema 与 __type 只能在单独的操作中查询，不能与数据字段混用。"
    assert with_typename == {"data": {"__typename": "Query", "__schema": {"queryType": {"name": "Query"}}}}


async def test_introspection_runs_on_a_thread_one_at_a_time(gql, member, monkeypatch):
    import threading
    import time

    running, most, threads = [0], [0], set()
    to_thread = asyncio.to_thread

    def watched(function, *args, **kwargs):
        def inside():
            running[0] += 1
            most[0] = max(most[0], running[0])
            threads.add(threading.get_ident())
            time.sleep(0.05)
            try:
                return function(*args, **kwargs)
            finally:
                running[0] -= 1

        return to_thread(inside)

    monkeypatch.setattr(asyncio, "to_thread", watched)

    answers = await asyncio.gather(*(gql("query { __schema { queryType { name } } }") for _ in range(3)))
    data = await gql("query { me { id } }", user=member)

    assert answers == [{"data": {"__schema": {"queryType": {"name": "Query"}}}}] * 3
    assert most[0] == 1
    assert threading.get_ident() not in threads and len(threads) >= 1
    assert data == {"data": {"me": {"id": str(member.id)}}}
