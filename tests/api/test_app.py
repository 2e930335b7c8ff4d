"""The app around GraphQL: health, request ids, GraphiQL, limits on documents, masked bugs."""

from __future__ import annotations

import logging

from services import catalog

REGIONS = "query { regions { id name } }"


async def test_healthz_checks_the_database(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_every_response_has_a_request_id_and_a_good_incoming_one_is_kept(client):
    made = await client.get("/healthz")
    kept = await client.get("/healthz", headers={"X-Request-ID": "trace-1234-abcd"})
    refused = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})

    assert len(made.headers["x-request-id"]) == 32
    assert kept.headers["x-request-id"] == "trace-1234-abcd"
    assert refused.headers["x-request-id"] != "bad id with spaces"


async def test_graphiql_is_served_to_browsers(client):
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_signed_out_callers_get_unauthenticated(gql):
    result = await gql(REGIONS)
    assert result["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in result["errors"]] == [
        (["regions"], "UNAUTHENTICATED")
    ]
    assert result["errors"][0]["message"] == "请先登录。"


async def test_a_document_nested_too_deep_is_refused(gql, member):
    deep = "query { regions " + "{ lines { region " * 7 + "{ id }" + " } }" * 7 + " }"
    result = await gql(deep, user=member)
    assert result["data"] is None
    assert "exceeds maximum operation depth" in result["errors"][0]["message"]


async def test_too_many_aliases_are_refused(gql, member):
    many = "query { " + " ".join(f"a{i}: me {{ id }}" for i in range(31)) + " }"
    result = await gql(many, user=member)
    assert result["data"] is None
    assert "aliases" in result["errors"][0]["message"]


async def test_a_bug_is_masked_for_the_client_and_logged_with_the_request_id(
    gql, member, monkeypatch, caplog
):
    async def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(catalog, "browse_regions", broken)

    with caplog.at_level(logging.ERROR, logger="tihuo.graphql"):
        result = await gql(REGIONS, user=member, headers={"X-Request-ID": "req-00000042"})

    error = result["errors"][0]
    assert error["message"] == "服务器内部错误。"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-00000042"}
    assert "secret internals" not in str(result)
    [record] = [r for r in caplog.records if r.name == "tihuo.graphql"]
    assert "req-00000042" in record.getMessage()
    assert "secret internals" in str(record.exc_info[1])


async def test_malformed_documents_get_a_top_level_code(gql, member):
    broken = await gql("query { quote(", user=member)
    unknown = await gql("query { noSuchField }", user=member)

    assert broken["data"] is None
    assert [e["extensions"]["code"] for e in broken["errors"]] == ["GRAPHQL_PARSE_FAILED"]
    assert [e["extensions"]["code"] for e in unknown["errors"]] == ["GRAPHQL_VALIDATION_FAILED"]


async def test_the_served_app_keeps_what_start_up_made_out_of_the_collectors_way(rt):
    import gc

    from tihuo.app import create_app

    app = create_app(runtime=rt)
    assert gc.get_freeze_count() == 0

    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        # the objects the collector still walks: few next to what start-up made
        walked = len(gc.get_objects())
        schema_frozen = not any(obj is app.state.schema for obj in gc.get_objects())

    assert schema_frozen
    assert walked * 20 < frozen, (walked, frozen)
    assert gc.get_freeze_count() == 0
