"""Persisted documents (RULES-v2 §6): Apollo's automatic persisted queries (register, then the hash
alone; an unknown hash answered the Apollo way), and trusted documents from a manifest file, which
with TIHUO_TRUSTED_DOCUMENTS_ONLY are all that the callers it names may run. Requests are sent in
the shapes Apollo Client, urql and Relay send them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import SettingsError
from tests.api.test_metrics import grown, scrape
from tests.conftest import CLIENT_ADDRESS, SignedInUser
from tihuo.app import create_app
from tihuo.persisted import load_manifest

ME = "query Me { me { username role } }"
# listed in the manifest: what the portal's build emitted
PORTAL_ME = "query PortalMe {\n  me {\n    username\n  }\n}"
PORTAL_REGIONS = "query PortalRegions {\n  regions {\n    code\n  }\n}"
CHANGE_PASSWORD = """mutation ($old: String!, $new: String!) {
  changePassword(input: {oldPassword: $old, newPassword: $new}) { __typename } }"""
NOT_FOUND = {
    "errors": [{"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256(text)}}


def _code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json", response.text
    [error] = response.json()["errors"]
    return error["extensions"]["code"]


def write_manifest(path: Path, *texts: str) -> Path:
    path.write_text(json.dumps({sha256(text): text for text in texts}), encoding="utf-8")
    return path


@pytest.fixture
def serve(rt, tmp_path) -> Callable[..., httpx.AsyncClient]:
    """A client of an app whose manifest lists PORTAL_ME and PORTAL_REGIONS, in the given mode."""

    def make(only: str = "off") -> httpx.AsyncClient:
        manifest = write_manifest(tmp_path / "persisted-documents.json", PORTAL_ME, PORTAL_REGIONS)
        rt.settings = rt.settings.model_copy(
            update={"trusted_documents": manifest, "trusted_documents_only": only}
        )
        transport = httpx.ASGITransport(app=create_app(runtime=rt), client=(CLIENT_ADDRESS, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    return make


# --- automatic persisted queries -------------------------------------------------------------


async def test_apq_registers_a_text_then_runs_it_by_its_hash_alone(client, member):
    unknown = await client.post("/graphql", json={"extensions": apq(ME)}, headers=member.headers)
    registered = await client.post(
        "/graphql", json={"query": ME, "extensions": apq(ME)}, headers=member.headers
    )
    by_hash = await client.post(
        "/graphql", json={"extensions": apq(ME), "operationName": "Me"}, headers=member.headers
    )

    assert unknown.status_code == 200
    assert unknown.json() == NOT_FOUND
    assert unknown.headers["cache-control"] == "private, no-cache, must-revalidate"
    expected = {"data": {"me": {"username": "member", "role": "MEMBER"}}}
    assert registered.json() == expected
    assert by_hash.status_code == 200
    assert by_hash.json() == expected


async def test_apq_over_get_as_apollo_and_urql_send_it(client, member):
    # useGETForHashedQueries / preferGetForPersistedQueries: fetch() accepts */*, there is no query
    params = {"extensions": json.dumps(apq(ME)), "variables": "{}", "operationName": "Me"}
    headers = {**member.headers, "Accept": "*/*"}

    unknown = await client.get("/graphql", params=params, headers=headers)
    registered = await client.get("/graphql", params={**params, "query": ME}, headers=headers)
    by_hash = await client.get("/graphql", params=params, headers=headers)

    assert unknown.json() == NOT_FOUND
    assert registered.json() == by_hash.json() == {"data": {"me": {"username": "member", "role": "MEMBER"}}}
    assert by_hash.headers["cache-control"] == "private, no-store"


async def test_a_text_that_is_not_its_hashs_is_refused_and_not_registered(client, member):
    other = "query { me { id } }"

    refused = await client.post(
        "/graphql", json={"query": other, "extensions": apq(ME)}, headers=member.headers
    )
    after = await client.post("/graphql", json={"extensions": apq(ME)}, headers=member.headers)

    assert refused.status_code == 400
    assert _code(refused) == "BAD_REQUEST"
    assert "provided sha does not match query" in refused.json()["errors"][0]["message"]
    assert after.json() == NOT_FOUND


@pytest.mark.parametrize(
    "extensions",
    [
        {"persistedQuery": {"version": 2, "sha256Hash": sha256(ME)}},
        {"persistedQuery": {"version": 1, "sha256Hash": "abc"}},
        {"persistedQuery": {"version": 1}},
        {"persistedQuery": "yes"},
    ],
    ids=["version-2", "short-hash", "no-hash", "not-an-object"],
)
async def test_a_malformed_persisted_query_is_a_json_400(client, member, extensions):
    response = await client.post("/graphql", json={"extensions": extensions}, headers=member.headers)

    assert response.status_code == 400
    assert _code(response) == "BAD_REQUEST"


# --- trusted documents -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        lambda text: {"json": {"extensions": apq(text)}},
        lambda text: {"json": {"documentId": f"sha256:{sha256(text)}"}},
        lambda text: {"json": {"doc_id": sha256(text), "variables": {}}},
        lambda text: {"params": {"documentId": sha256(text)}},
    ],
    ids=["apq", "documentId", "relay-doc_id", "get-documentId"],
)
async def test_a_trusted_document_runs_by_its_hash_without_registering(serve, member, shape):
    request = shape(PORTAL_ME)
    async with serve() as http:
        response = await http.request(
            "GET" if "params" in request else "POST", "/graphql", headers=member.headers, **request
        )

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"me": {"username": "member"}}}


async def test_a_document_id_and_an_apq_hash_must_name_the_same_document(serve, member):
    async with serve() as http:
        response = await http.post(
            "/graphql",
            json={"documentId": sha256(PORTAL_ME), "extensions": apq(PORTAL_REGIONS)},
            headers=member.headers,
        )

    assert response.status_code == 400
    assert _code(response) == "BAD_REQUEST"


async def test_members_only_a_member_cannot_run_an_unlisted_document(serve, rt, member):
    new_password = "another long password"
    async with serve("members") as http:
        as_text = await http.post(
            "/graphql",
            json={"query": CHANGE_PASSWORD, "variables": {"old": member.password, "new": new_password}},
            headers={**member.headers, "Accept-Language": "en"},
        )
        still_signed_in = await http.post("/graphql", json={"query": PORTAL_ME}, headers=member.headers)

    assert as_text.status_code == 403
    assert as_text.json() == {
        "errors": [
            {
                "message": "Only the documents in the trusted list may be run.",
                "extensions": {"code": "PERSISTED_QUERY_NOT_IN_LIST"},
            }
        ]
    }
    # nothing ran: the old token still works, so the password was not changed
    assert still_signed_in.json() == {"data": {"me": {"username": "member"}}}


async def test_members_only_a_member_runs_a_listed_document_however_sent(serve, member, catalog):
    async with serve("members") as http:
        by_text = await http.post("/graphql", json={"query": PORTAL_ME}, headers=member.headers)
        by_hash = await http.post("/graphql", json={"extensions": apq(PORTAL_ME)}, headers=member.headers)
        both = await http.get(
            "/graphql",
            params={"query": PORTAL_REGIONS, "extensions": json.dumps(apq(PORTAL_REGIONS))},
            headers=member.headers,
        )

    assert by_text.json() == by_hash.json() == {"data": {"me": {"username": "member"}}}
    assert both.json() == {"data": {"regions": [{"code": "cn-east"}, {"code": "hk"}]}}


async def test_members_only_a_text_an_admin_registered_is_still_unlisted_for_a_member(serve, admin, member):
    async with serve("members") as http:
        registered = await http.post(
            "/graphql", json={"query": ME, "extensions": apq(ME)}, headers=admin.headers
        )
        by_admin = await http.post("/graphql", json={"extensions": apq(ME)}, headers=admin.headers)
        by_member = await http.post("/graphql", json={"extensions": apq(ME)}, headers=member.headers)

    assert registered.json() == by_admin.json() == {"data": {"me": {"username": "admin", "role": "ADMIN"}}}
    assert by_member.status_code == 403
    assert _code(by_member) == "PERSISTED_QUERY_NOT_IN_LIST"


async def test_members_only_leaves_admins_and_the_signed_out_free(serve, admin):
    login = 'mutation { login(input: {username: "admin", password: "wrong"}) { __typename } }'
    async with serve("members") as http:
        signed_out = await http.post("/graphql", json={"query": login})
        as_admin = await http.post("/graphql", json={"query": ME}, headers=admin.headers)

    assert signed_out.json() == {"data": {"login": {"__typename": "WrongPasswordError"}}}
    assert as_admin.json() == {"data": {"me": {"username": "admin", "role": "ADMIN"}}}


@pytest.mark.parametrize("who", ["admin", "member", "nobody"])
async def test_all_only_nobody_runs_an_unlisted_document(serve, admin, member, who):
    user: SignedInUser | None = {"admin": admin, "member": member, "nobody": None}[who]
    headers = user.headers if user else {}
    async with serve("all") as http:
        unlisted = await http.post("/graphql", json={"query": ME}, headers=headers)
        listed = await http.post("/graphql", json={"extensions": apq(PORTAL_ME)}, headers=headers)

    assert unlisted.status_code == 403
    assert _code(unlisted) == "PERSISTED_QUERY_NOT_IN_LIST"
    assert listed.json() == {"data": {"me": None if user is None else {"username": user.viewer.username}}}


async def test_a_trusted_documents_operation_name_labels_its_metrics(serve, member, client):
    before = await scrape(client)
    async with serve() as http:
        await http.post("/graphql", json={"extensions": apq(PORTAL_ME)}, headers=member.headers)
        await http.post("/graphql", json={"query": ME}, headers=member.headers)
    after = await scrape(client)

    assert grown(before, after, "tihuo_graphql_requests_total", operation="PortalMe", outcome="ok") == 1
    # an unlisted document keeps the label of its first root field, whatever it calls itself
    assert grown(before, after, "tihuo_graphql_requests_total", operation="me", outcome="ok") == 1
    assert grown(before, after, "tihuo_graphql_requests_total", operation="Me", outcome="ok") == 0


# --- the manifest file ---------------------------------------------------------------------------


def test_a_code_generator_manifest_is_read_with_its_prefixed_keys(tmp_path):
    path = tmp_path / "persisted-documents.json"
    path.write_text(json.dumps({f"sha256:{sha256(PORTAL_ME)}": PORTAL_ME}))

    trusted = load_manifest(path)

    assert list(trusted) == [sha256(PORTAL_ME)]
    assert trusted[sha256(PORTAL_ME)].text == PORTAL_ME


async def test_a_prefixed_hash_in_apq_names_the_same_document(serve, member):
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": f"sha256:{sha256(PORTAL_ME)}"}}
    async with serve() as http:
        response = await http.post("/graphql", json={"extensions": extensions}, headers=member.headers)

    assert response.json() == {"data": {"me": {"username": "member"}}}


def test_an_apollo_manifest_is_read_too(tmp_path):
    path = tmp_path / "persisted-query-manifest.json"
    path.write_text(
        json.dumps(
            {
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [
                    {"id": sha256(PORTAL_ME), "name": "PortalMe", "type": "query", "body": PORTAL_ME}
                ],
            }
        )
    )

    trusted = load_manifest(path)

    assert list(trusted) == [sha256(PORTAL_ME)]
    assert trusted[sha256(PORTAL_ME)].operation_names == {"PortalMe"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            json.dumps({hashlib.sha1(PORTAL_ME.encode(), usedforsecurity=False).hexdigest(): PORTAL_ME}),
            "is not the SHA-256",
        ),
        (json.dumps({sha256("query {"): "query {"}), "does not parse"),
        (json.dumps([PORTAL_ME]), "must be a JSON object"),
        ("{not json", "is not JSON"),
    ],
    ids=["sha1", "does-not-parse", "a-list", "not-json"],
)
def test_a_manifest_that_cannot_be_trusted_stops_the_start(tmp_path, content, problem):
    path = tmp_path / "manifest.json"
    path.write_text(content)

    with pytest.raises(SettingsError, match=rf"TIHUO_TRUSTED_DOCUMENTS: .*{problem}"):
        load_manifest(path)


def test_a_missing_manifest_stops_the_start(tmp_path):
    with pytest.raises(SettingsError, match=r"TIHUO_TRUSTED_DOCUMENTS: .* cannot be read"):
        load_manifest(tmp_path / "nowhere.json")


def test_trusted_only_needs_a_manifest(monkeypatch):
    from core.settings import load_settings

    monkeypatch.setenv("TIHUO_TRUSTED_DOCUMENTS_ONLY", "members")

    with pytest.raises(SettingsError, match="TIHUO_TRUSTED_DOCUMENTS_ONLY needs TIHUO_TRUSTED_DOCUMENTS"):
        load_settings(_env_file=None)
