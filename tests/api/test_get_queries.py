"""Queries over GET (RULES-v2 §6), never mutations; and a Cache-Control that fits each answer: a
catalog read signed in may be kept briefly by the asker's own cache, everything else is
`private, no-store`."""

from __future__ import annotations

import json

import pytest

from tests.factories import create_batch, row_counts

REGIONS = "query Regions { regions { code name } }"
CATALOG_WITH_FRAGMENTS = """query Lines { __typename ...Where }
fragment Where on Query { regions { code ... on Region { lines { code } } } }"""
MIXED = "query { regions { code } me { username } }"
ME = "query Me($withRole: Boolean!) { me { username role @include(if: $withRole) } }"
REMARK = 'mutation { setCardRemark(id: "1", remark: "x") { __typename } }'
REGION_CODES = [{"code": "cn-east", "name": "华东-上海"}, {"code": "hk", "name": "中国香港"}]
JSON_ACCEPT = {"Accept": "application/json"}


async def test_a_query_over_get_runs_with_variables_and_an_operation_name(client, member):
    response = await client.get(
        "/graphql",
        params={"query": ME, "variables": json.dumps({"withRole": True}), "operationName": "Me"},
        headers={**member.headers, **JSON_ACCEPT},
    )

    assert response.status_code == 200
    assert response.json() == {"data": {"me": {"username": "member", "role": "MEMBER"}}}
    assert response.headers["cache-control"] == "private, no-store"


async def test_a_catalog_read_over_get_may_be_kept_briefly_by_the_askers_cache(client, catalog, member):
    response = await client.get("/graphql", params={"query": REGIONS}, headers=member.headers)
    through_fragments = await client.get(
        "/graphql", params={"query": CATALOG_WITH_FRAGMENTS}, headers=member.headers
    )

    assert response.status_code == 200
    assert response.json() == {"data": {"regions": REGION_CODES}}
    assert response.headers["cache-control"] == "private, max-age=60"
    assert response.headers["vary"] == "Authorization, Accept-Language"
    assert through_fragments.json()["data"]["regions"][0]["lines"][0] == {"code": "sh-bgp"}
    assert through_fragments.headers["cache-control"] == "private, max-age=60"


@pytest.mark.parametrize(
    ("query", "signed_in", "why"),
    [
        (MIXED, True, "a private field beside the catalog"),
        (REGIONS, False, "signed out: UNAUTHENTICATED"),
        ("query { regions { code nope } }", True, "a document that does not validate"),
    ],
    ids=["mixed", "signed-out", "invalid"],
)
async def test_any_other_answer_over_get_is_kept_by_no_cache(client, catalog, member, query, signed_in, why):
    response = await client.get(
        "/graphql", params={"query": query}, headers=member.headers if signed_in else JSON_ACCEPT
    )

    assert response.status_code == 200, why
    assert response.headers["cache-control"] == "private, no-store", why


async def test_the_same_catalog_read_over_post_is_not_marked_for_caches(client, catalog, member):
    response = await client.post("/graphql", json={"query": REGIONS}, headers=member.headers)

    assert response.json() == {"data": {"regions": REGION_CODES}}
    assert response.headers["cache-control"] == "private, no-store"


async def test_a_zero_catalog_cache_keeps_every_answer_private(rt, catalog, member):
    import httpx

    from tihuo.app import create_app

    rt.settings = rt.settings.model_copy(update={"catalog_cache_seconds": 0})
    transport = httpx.ASGITransport(app=create_app(runtime=rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/graphql", params={"query": REGIONS}, headers=member.headers)

    assert response.json() == {"data": {"regions": REGION_CODES}}
    assert response.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html"])
async def test_a_mutation_over_get_is_refused_as_json_whatever_it_accepts(
    gql, client, rt, catalog, admin, accept
):
    batch = await create_batch(gql, admin, quantity=1)
    before = await row_counts(rt)

    response = await client.get(
        "/graphql",
        params={"query": REMARK.replace('"1"', json.dumps(batch["id"]))},
        headers={**admin.headers, "Accept": accept, "Accept-Language": "en"},
    )

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "errors": [
            {"message": "Mutations must be sent with POST.", "extensions": {"code": "METHOD_NOT_ALLOWED"}}
        ]
    }
    assert await row_counts(rt) == before


async def test_bad_variables_over_get_are_a_json_400(client, member):
    response = await client.get(
        "/graphql", params={"query": ME, "variables": "{not json"}, headers=member.headers
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_a_browser_visit_still_opens_graphiql(client):
    response = await client.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
