"""The HTTP edge (RULES-v2 §6–7): every malformed request answers JSON with a code and a 4xx status,
bodies over the limit are refused, forwarded headers count only from trusted proxies, links never
follow the Host header, and answers carry the headers private data needs."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import GraphQLClient
from tests.factories import create_batch, download_link, row_counts
from tihuo.app import create_app

ME = "query { me { id } }"
LOGIN = """mutation ($u: String!, $p: String!) { login(input: {username: $u, password: $p}) {
  __typename ... on Error { code } } }"""


def _refusal(response: httpx.Response) -> tuple[int, str, str]:
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    [error] = body["errors"]
    return response.status_code, error["extensions"]["code"], error["message"]


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"query": "{ me { id } }"', {"content-type": "application/json"}, 400, "BAD_REQUEST"),
        (b'{"query": "\xff\xfe"}', {"content-type": "application/json"}, 400, "BAD_REQUEST"),
        (
            b'{"query": "query ($v: String) { me { id } }", "variables": {"v": '
            + _deep(50_000).encode()
            + b"}}",
            {"content-type": "application/json"},
            400,
            "BAD_REQUEST",
        ),
        (b'[{"query": "{ me { id } }"}]', {"content-type": "application/json"}, 400, "BAD_REQUEST"),
        (b"{}", {"content-type": "application/json"}, 400, "BAD_REQUEST"),
        (b'{"query": 42}', {"content-type": "application/json"}, 400, "BAD_REQUEST"),
        (b'{"query": "{ me { id } }"}', {"content-type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            b"query=%7B+me+%7B+id+%7D+%7D",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ],
    ids=["bad-json", "not-utf8", "50000-deep", "batch", "no-query", "query-not-string", "text", "form"],
)
async def test_a_malformed_post_answers_json_with_a_code(client, content, headers, status, code):
    response = await client.post("/graphql", content=content, headers=headers)

    assert _refusal(response)[:2] == (status, code)
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "body",
    [
        {"query": LOGIN, "variables": {"u": "ad\x00min", "p": "x"}},
        {"query": 'mutation { login(input: {username: "ad\\u0000min", password: "x"}) { __typename } }'},
    ],
    ids=["in-a-variable", "in-a-literal"],
)
async def test_a_nul_character_is_refused_before_it_reaches_the_database(client, rt, body):
    before = await row_counts(rt)

    response = await client.post("/graphql", json=body)

    assert _refusal(response) == (400, "BAD_REQUEST", "文本中不能含有 NUL 字符（U+0000）。")
    assert await row_counts(rt) == before


async def test_a_mutation_over_get_is_refused_and_changes_nothing(client, rt, admin):
    before = await row_counts(rt)

    response = await client.get(
        "/graphql",
        params={"query": 'mutation { setCardRemark(id: "1", remark: "x") { __typename } }'},
        headers={**admin.headers, "Accept": "application/json"},
    )

    assert _refusal(response)[:2] == (405, "METHOD_NOT_ALLOWED")
    assert await row_counts(rt) == before


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_subscription_over_http_is_refused_with_where_it_goes(client, rt, member, method):
    before = await row_counts(rt)
    document = "subscription Watch { myOrderUpdates { id status } }"
    headers = {**member.headers, "Accept": "application/json", "Accept-Language": "en"}

    if method == "POST":
        response = await client.post("/graphql", json={"query": document}, headers=headers)
    else:
        response = await client.get("/graphql", params={"query": document}, headers=headers)

    assert _refusal(response) == (
        400,
        "BAD_REQUEST",
        "Subscriptions go over a WebSocket to /graphql (the graphql-transport-ws protocol).",
    )
    assert await row_counts(rt) == before


async def test_a_query_naming_a_subscription_field_in_a_string_still_runs(client, member):
    # the cheap look for the word is only a first step: a query is a query
    response = await client.post(
        "/graphql",
        json={"query": "query subscription { me { id } }", "operationName": "subscription"},
        headers=member.headers,
    )

    assert response.json() == {"data": {"me": {"id": str(member.id)}}}


async def test_a_wrong_method_or_path_answers_json_in_the_asked_language(client):
    put = await client.put("/graphql", content=b"{}", headers={"Accept-Language": "en"})
    missing = await client.get("/no/such/path")

    assert _refusal(put) == (405, "METHOD_NOT_ALLOWED", "This HTTP method is not allowed here.")
    assert _refusal(missing) == (404, "NOT_FOUND", "地址不存在。")


async def test_an_unknown_download_link_is_a_json_404(client):
    response = await client.get("/downloads/no-such-token")

    assert _refusal(response) == (404, "NOT_FOUND", "地址不存在。")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(client, rt):
    limit = rt.settings.max_body_bytes
    padding = " " * limit
    declared = await client.post(
        "/graphql", content=json.dumps({"query": ME + padding}), headers={"content-type": "application/json"}
    )

    async def chunks():
        # no Content-Length: the limit holds on the bytes that arrive
        yield b'{"query": "' + ME.encode()
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096
        yield b'"}'

    streamed = await client.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
    just_fits = await client.post(
        "/graphql",
        content=json.dumps({"query": ME + " " * (limit - 100)}),
        headers={"content-type": "application/json"},
    )

    assert _refusal(declared) == (413, "PAYLOAD_TOO_LARGE", f"请求体过大（上限 {limit} 字节）。")
    assert _refusal(streamed)[:2] == (413, "PAYLOAD_TOO_LARGE")
    assert just_fits.status_code == 200
    assert just_fits.json() == {"data": {"me": None}}


async def test_graphql_answers_are_not_cached_nor_sniffed(gql, client, member):
    response = await client.post("/graphql", json={"query": ME}, headers=member.headers)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json() == {"data": {"me": {"id": str(member.id)}}}


async def test_a_download_link_names_the_public_url_whatever_the_host_header(gql, client, catalog, admin):
    batch = await create_batch(gql, admin, quantity=1)

    link = await download_link(gql, admin, batch["id"], headers={"Host": "evil.example"})

    assert link["url"].startswith("https://cards.example.com/downloads/"), link


async def test_without_a_public_url_the_link_is_relative_to_the_server(rt, catalog, admin):
    rt.settings = rt.settings.model_copy(update={"public_url": None})
    transport = httpx.ASGITransport(app=create_app(runtime=rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as http:
        gql = GraphQLClient(http)
        batch = await create_batch(gql, admin, quantity=1)
        link = await download_link(gql, admin, batch["id"])
        fetched = await http.get(link["url"])

    assert link["url"].startswith("/downloads/"), link
    assert fetched.status_code == 200


async def _wrong_logins_from_loopback(rt, forwarded_for: list[str]) -> list[str]:
    transport = httpx.ASGITransport(app=create_app(runtime=rt), client=("127.0.0.1", 5000))
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for index, address in enumerate(forwarded_for):
            response = await http.post(
                "/graphql",
                json={"query": LOGIN, "variables": {"u": f"nobody{index}", "p": "wrong password"}},
                headers={"X-Forwarded-For": address},
            )
            answers.append(response.json()["data"]["login"]["code"])
    return answers


async def test_forwarded_for_from_loopback_is_not_believed_by_default(rt):
    # five different usernames, each from a "different" address the client made up
    answers = await _wrong_logins_from_loopback(rt, [f"198.51.100.{n}" for n in range(1, 8)])

    # the address limit counted them all as 127.0.0.1: blocked after five
    assert answers == ["WRONG_PASSWORD"] * 5 + ["RATE_LIMITED"] * 2


async def test_forwarded_for_counts_from_a_trusted_proxy(rt):
    rt.settings = rt.settings.model_copy(update={"forwarded_allow_ips": "127.0.0.1, 10.0.0.0/8"})

    answers = await _wrong_logins_from_loopback(rt, [f"198.51.100.{n}" for n in range(1, 8)])

    # each address its own: nobody reached the limit
    assert answers == ["WRONG_PASSWORD"] * 7
