"""Signing in through the portal (RULES-v2 §1) against a real OpenID provider (tests/oidc_provider.py):
members made just in time with a stable id, admins by role claim, every kind of bad token refused
alike, key rotation, an unreachable key set, local accounts beside portal ones, the download's
step-up, and every root field per portal role."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from core.keys import Keys
from models import CardBatchDownload, ExternalIdentity, Role, User
from services.accounts import disable_user
from services.portal import portal_username
from services.runtime import Runtime, Viewer
from tests.api.test_permissions import EXPECTED, HTTP_FIELDS, _document
from tests.conftest import GraphQLClient, SignedInUser
from tests.factories import CREATE_DOWNLOAD, audit_rows, create_batch
from tests.oidc_provider import AUDIENCE, OpenIdProvider, needs_provider, running_provider
from tihuo.app import create_app

pytestmark = needs_provider

ME = "query { me { id username role } }"
# a member-only field beside `me`: a refused token is UNAUTHENTICATED there
MEMBER_QUERY = "query { me { id } myRedemptions(first: 1) { totalCount } }"
ADMIN_QUERY = "query { cardBatches(first: 1) { totalCount } }"
LOGIN = """
mutation ($username: String!, $password: String!) {
  login(input: {username: $username, password: $password}) {
    __typename
    ... on LoginSuccess { viewer { username } }
    ... on Error { code message }
  }
}
"""


@pytest.fixture(scope="module")
def openid_provider(tmp_path_factory) -> Iterator[OpenIdProvider]:
    with running_provider(tmp_path_factory.mktemp("oidc") / "provider.log") as provider:
        yield provider


@pytest.fixture
def settings(settings, openid_provider):
    return settings.model_copy(update={"oidc_issuer": openid_provider.issuer, "oidc_audience": AUDIENCE})


@pytest.fixture(autouse=True)
async def _close_key_fetcher(rt):
    yield
    if rt.portal_tokens is not None:
        await rt.portal_tokens.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def users_and_identities(rt) -> tuple[int, int]:
    async with rt.db.read() as session:
        return (
            int(await session.scalar(select(func.count()).select_from(User)) or 0),
            int(await session.scalar(select(func.count()).select_from(ExternalIdentity)) or 0),
        )


async def user_row(rt, user_id: str | int) -> User:
    async with rt.db.read() as session:
        user = await session.get(User, int(user_id))
    assert user is not None
    return user


async def test_a_portal_token_signs_a_new_member_in_and_the_member_id_stays_on_the_next_sign_in(
    gql, rt, openid_provider
):
    # given a portal user tihuo has never seen
    assert await users_and_identities(rt) == (0, 0)
    token = await openid_provider.token(
        "portal-user-1001", phone_number="13900001111", name="张三", id_verified=True, email="a@example.com"
    )

    # when they call tihuo with the portal's token
    first = await gql(MEMBER_QUERY, headers=bearer(token))

    # then a member is made for (issuer, sub), with the phone and real-name claims of the token
    assert "errors" not in first, first
    member_id = first["data"]["me"]["id"]
    assert first["data"]["myRedemptions"] == {"totalCount": 0}
    me = await gql(ME, headers=bearer(token))
    assert me["data"]["me"] == {
        "id": member_id,
        "username": portal_username(openid_provider.issuer, "portal-user-1001"),
        "role": "MEMBER",
    }
    user = await user_row(rt, member_id)
    assert (user.phone, user.realname_claims, user.password_hash) == (
        "13900001111",
        {"name": "张三", "id_verified": True},
        "",
    )
    assert await users_and_identities(rt) == (1, 1)

    # when they sign in again later with a new token, carrying a new phone number
    again = await openid_provider.token("portal-user-1001", phone_number="13900002222", name="张三")
    second = await gql(ME, headers=bearer(again))

    # then it is the same member, and the phone and real-name fields are the new token's
    assert second["data"]["me"]["id"] == member_id
    user = await user_row(rt, member_id)
    assert (user.phone, user.realname_claims) == ("13900002222", {"name": "张三"})
    assert await users_and_identities(rt) == (1, 1)
    # and a different portal user is a different member
    other = await gql(ME, headers=bearer(await openid_provider.token("portal-user-1002")))
    assert other["data"]["me"]["id"] not in (None, member_id)
    assert await users_and_identities(rt) == (2, 2)


async def test_concurrent_first_sign_ins_of_one_identity_make_one_member(gql, rt, openid_provider):
    # given five requests at once, each with its own new token for one portal user never seen
    tokens = [await openid_provider.token("rush-1", phone_number="13600000000") for _ in range(5)]

    answers = await asyncio.gather(*(gql(ME, headers=bearer(token)) for token in tokens))

    # then all are signed in as one and the same member
    assert len({answer["data"]["me"]["id"] for answer in answers}) == 1, answers
    assert await users_and_identities(rt) == (1, 1)


async def test_the_role_claim_makes_an_admin_and_a_later_token_without_it_a_member_again(
    gql, rt, openid_provider
):
    # given a portal token whose roles hold tihuo-admin
    token = await openid_provider.token("ops-7", roles=["staff", "tihuo-admin"])

    # then it signs in an admin, who may use admin fields and not member ones
    me = (await gql(ME, headers=bearer(token)))["data"]["me"]
    assert me["role"] == "ADMIN"
    assert await gql(ADMIN_QUERY, headers=bearer(token)) == {"data": {"cardBatches": {"totalCount": 0}}}
    member_only = await gql(MEMBER_QUERY, headers=bearer(token))
    assert [e["extensions"]["code"] for e in member_only["errors"]] == ["FORBIDDEN"]

    # when the portal stops giving the role (a space separated claim, as some portals send it)
    demoted = await openid_provider.token("ops-7", roles="staff auditors")
    again = (await gql(ME, headers=bearer(demoted)))["data"]["me"]

    # then the same user is a member now, and both changes of role are in the audit log
    assert again == {**me, "role": "MEMBER"}
    refused = await gql(ADMIN_QUERY, headers=bearer(demoted))
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    entries = await audit_rows(rt, "user.set_role_from_portal")
    assert [(e.entity_id, e.actor_id, e.old, e.new) for e in entries] == [
        (me["id"], None, None, {"role": "ADMIN"}),
        (me["id"], None, {"role": "ADMIN"}, {"role": "MEMBER"}),
    ]


# --- tokens the provider would never issue, crafted with its own key -----------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(key: dict[str, Any], claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        claims,
        jwt.PyJWK(key).key,
        algorithm=key["alg"],
        headers={"kid": key["kid"], "typ": "at+jwt", **header},
    )


def _unsigned(key: dict[str, Any], claims: dict[str, Any]) -> str:
    header = {"alg": "none", "kid": key["kid"], "typ": "at+jwt"}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(key: dict[str, Any], claims: dict[str, Any]) -> str:
    """The old confusion attack: HMAC keyed with the issuer's public key, which anyone can fetch."""
    public = jwt.PyJWK(key).key.public_key()
    secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": key["kid"], "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _foreign_key(key: dict[str, Any]) -> dict[str, Any]:
    """A key of the same kind and the same `kid`, that the issuer never published."""
    other = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048)))
    return {**other, "kid": key["kid"], "alg": "RS256"}


def _claims(issuer: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "aud": AUDIENCE, "sub": "crafted-1", "iat": now, "exp": now + 600, **changes}


CRAFTED = {
    "expired": lambda key, iss: _signed(key, _claims(iss, exp=int(time.time()) - 61)),
    "not yet valid": lambda key, iss: _signed(key, _claims(iss, nbf=int(time.time()) + 120)),
    "wrong audience": lambda key, iss: _signed(key, _claims(iss, aud="urn:another-service")),
    "wrong issuer": lambda key, iss: _signed(key, _claims("https://portal.example.net")),
    "issuer's name, other key": lambda key, iss: _signed(_foreign_key(key), _claims(iss)),
    "no sub": lambda key, iss: _signed(key, {k: v for k, v in _claims(iss).items() if k != "sub"}),
    "alg none": lambda key, iss: _unsigned(key, _claims(iss)),
    "HS256 with the public key": lambda key, iss: _hs256_with_public_key(key, _claims(iss)),
    "unknown kid": lambda key, iss: _signed({**_foreign_key(key), "kid": "never-published"}, _claims(iss)),
    "not a JWT": lambda key, iss: "eyJhbGciOi.garbage",
}


@pytest.mark.parametrize("kind", list(CRAFTED))
async def test_a_bad_token_is_unauthenticated_and_learns_nothing_and_makes_nobody(
    gql, rt, openid_provider, kind
):
    # given a token that is wrong in one way only (the others are signed with the provider's key)
    key = await openid_provider.signing_key()
    token = CRAFTED[kind](key, openid_provider.issuer)

    # when it is used
    answer = await gql(MEMBER_QUERY, headers=bearer(token))

    # then the caller is not signed in, told exactly what a missing token would be told
    signed_out = await gql(MEMBER_QUERY)
    assert answer == signed_out
    assert answer["data"] is None
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["UNAUTHENTICATED"]
    assert await gql(ME, headers=bearer(token)) == {"data": {"me": None}}
    assert await users_and_identities(rt) == (0, 0)


async def test_the_crafted_tokens_differ_from_a_good_one_only_in_what_they_name(gql, rt, openid_provider):
    # the control: the same crafting, nothing wrong, within the 60 s leeway of exp: accepted
    key = await openid_provider.signing_key()
    good = _signed(key, _claims(openid_provider.issuer, exp=int(time.time()) - 30))
    answer = await gql(MEMBER_QUERY, headers=bearer(good))
    assert answer["data"]["myRedemptions"] == {"totalCount": 0}, answer
    assert await users_and_identities(rt) == (1, 1)


# --- keys: rotation, the once-a-minute rule, an unreachable key set --------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_a_rotated_key_is_fetched_once_then_accepted(gql, rt, clock, openid_provider, alg):
    # given tihuo signed someone in, so it holds the provider's key set
    clock.set(clock())
    before = await openid_provider.jwks_requests()
    first = await gql(ME, headers=bearer(await openid_provider.token("rotating-1")))
    assert first["data"]["me"]["role"] == "MEMBER"
    assert await openid_provider.jwks_requests() == before + 1

    # when the provider rotates to a new key tihuo has not seen, a minute after that fetch
    kid = await openid_provider.rotate(alg)
    rotated = await openid_provider.token("rotating-2")
    assert jwt.get_unverified_header(rotated) == {"alg": alg, "kid": kid, "typ": "at+jwt"}
    clock.advance(seconds=61)
    answer = await gql(ME, headers=bearer(rotated))

    # then the key set is fetched once and the token accepted
    assert answer["data"]["me"]["role"] == "MEMBER", answer
    assert await openid_provider.jwks_requests() == before + 2
    # more tokens of the new key, and of the old member, need no fetch
    assert (await gql(ME, headers=bearer(await openid_provider.token("rotating-3"))))["data"]["me"]
    assert (await gql(ME, headers=bearer(await openid_provider.token("rotating-1"))))["data"]["me"] == first[
        "data"
    ]["me"]
    # and a made-up kid does not make tihuo fetch again within the minute
    made_up = _signed(
        {**_foreign_key(await openid_provider.signing_key()), "kid": "made-up"},
        _claims(openid_provider.issuer),
    )
    assert (await gql(ME, headers=bearer(made_up))) == {"data": {"me": None}}
    assert await openid_provider.jwks_requests() == before + 2


async def test_a_new_kid_within_a_minute_of_the_last_fetch_waits_for_the_minute(
    gql, rt, clock, openid_provider
):
    clock.set(clock())
    assert (await gql(ME, headers=bearer(await openid_provider.token("early-1"))))["data"]["me"]
    before = await openid_provider.jwks_requests()
    await openid_provider.rotate("ES256")
    rotated = await openid_provider.token("early-2")

    # within the minute: refused, with no fetch
    assert await gql(ME, headers=bearer(rotated)) == {"data": {"me": None}}
    assert await openid_provider.jwks_requests() == before

    # after it: fetched once, accepted
    clock.advance(seconds=60)
    assert (await gql(ME, headers=bearer(rotated)))["data"]["me"]["role"] == "MEMBER"
    assert await openid_provider.jwks_requests() == before + 1


async def test_healthz_reports_the_portal_keys(client, openid_provider):
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ok", "database": "ok", "portalKeys": "ok"},
    )


@pytest.fixture
def unreachable_settings(settings):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return settings.model_copy(update={"oidc_jwks_url": f"http://127.0.0.1:{port}/jwks"})


async def test_an_unreachable_key_set_fails_closed_and_shows_in_healthz(
    db, unreachable_settings, clock, openid_provider
):
    rt = Runtime(
        db=db, settings=unreachable_settings, keys=Keys.from_secret(unreachable_settings.secret), clock=clock
    )
    transport = httpx.ASGITransport(app=create_app(runtime=rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        gql = GraphQLClient(http)
        # a token the provider really issued
        token = await openid_provider.token("anyone-1")

        answer = await gql(MEMBER_QUERY, headers=bearer(token))

        assert answer["data"] is None
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["UNAUTHENTICATED"]
        response = await http.get("/healthz")
        assert (response.status_code, response.json()) == (
            200,
            {"status": "degraded", "database": "ok", "portalKeys": "unreachable"},
        )
    await rt.portal_tokens.aclose()
    assert await users_and_identities(rt) == (0, 0)


async def test_a_discovery_document_naming_another_issuer_gives_no_keys(db, settings, clock, openid_provider):
    # the provider calls itself http://127.0.0.1:…; tihuo told it is http://localhost:… (same server)
    elsewhere = openid_provider.issuer.replace("127.0.0.1", "localhost")
    rt = Runtime(
        db=db,
        settings=settings.model_copy(update={"oidc_issuer": elsewhere}),
        keys=Keys.from_secret(settings.secret),
        clock=clock,
    )
    transport = httpx.ASGITransport(app=create_app(runtime=rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/healthz")
    await rt.portal_tokens.aclose()
    assert response.json() == {"status": "degraded", "database": "ok", "portalKeys": "unreachable"}


# --- local accounts beside portal ones ------------------------------------------------------------


async def test_a_local_account_still_works_beside_portal_tokens(gql, rt, openid_provider, member, admin):
    portal = await gql(ME, headers=bearer(await openid_provider.token("side-by-side")))
    local = await gql(ME, user=member)
    signed_in = await gql(LOGIN, {"username": "admin", "password": admin.password})

    assert portal["data"]["me"]["role"] == "MEMBER"
    assert local == {"data": {"me": {"id": str(member.id), "username": "member", "role": "MEMBER"}}}
    assert signed_in["data"]["login"] == {"__typename": "LoginSuccess", "viewer": {"username": "admin"}}


async def test_local_login_turned_off_refuses_login_and_local_tokens_alike(
    rt, settings, openid_provider, member
):
    off = settings.model_copy(update={"local_login": False})
    portal_only = Runtime(db=rt.db, settings=off, keys=rt.keys, clock=rt.clock)
    transport = httpx.ASGITransport(app=create_app(runtime=portal_only))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        gql = GraphQLClient(http)
        refused = await gql(
            LOGIN, {"username": "member", "password": member.password}, headers={"Accept-Language": "en"}
        )
        old_token = await gql(ME, user=member)
        portal = await gql(ME, headers=bearer(await openid_provider.token("portal-only")))
    await portal_only.portal_tokens.aclose()

    assert refused["data"]["login"] == {
        "__typename": "WrongPasswordError",
        "code": "WRONG_PASSWORD",
        "message": "Signing in with a username and password is turned off here: sign in through the portal.",
    }
    assert old_token == {"data": {"me": None}}
    assert portal["data"]["me"]["role"] == "MEMBER"


async def test_a_disabled_portal_user_is_refused(gql, rt, openid_provider):
    token = await openid_provider.token("leaver-1")
    username = (await gql(ME, headers=bearer(token)))["data"]["me"]["username"]

    assert await disable_user(rt, username=username)

    assert await gql(ME, headers=bearer(token)) == {"data": {"me": None}}
    assert await gql(ME, headers=bearer(await openid_provider.token("leaver-1"))) == {"data": {"me": None}}


# --- the download's step-up ------------------------------------------------------------------------


async def _portal_admin(gql, openid_provider, *, auth_age_seconds: int) -> SignedInUser:
    token = await openid_provider.token(
        "ops-download", roles=["tihuo-admin"], auth_time=int(time.time()) - auth_age_seconds
    )
    me = (await gql(ME, headers=bearer(token)))["data"]["me"]
    assert me["role"] == "ADMIN"
    return SignedInUser(viewer=Viewer(int(me["id"]), me["username"], Role.ADMIN), password="", token=token)


async def _download(gql, admin: SignedInUser, batch_id: str, password: str = "") -> dict[str, Any]:
    result = await gql(
        CREATE_DOWNLOAD,
        {"batchId": batch_id, "password": password},
        user=admin,
        headers={"Accept-Language": "en"},
    )
    return result["data"]["createCardBatchDownload"]


async def test_a_portal_admin_downloads_with_a_fresh_sign_in_instead_of_a_password(
    gql, rt, clock, catalog, openid_provider
):
    # given a portal admin who signed in at the portal 2 minutes ago, and a batch
    admin = await _portal_admin(gql, openid_provider, auth_age_seconds=120)
    batch = await create_batch(gql, admin, quantity=3)

    # then "" confirms the download
    link = await _download(gql, admin, batch["id"])
    assert link["__typename"] == "CardBatchDownload", link

    # but not once that sign-in is over 5 minutes old (the same token, 4 minutes on)
    clock.set(clock() + timedelta(minutes=4))
    stale = await _download(gql, admin, batch["id"])
    assert stale == {
        "__typename": "WrongPasswordError",
        "code": "WRONG_PASSWORD",
        "message": "Sign in at the portal again (within the last 5 minutes) before downloading.",
    }
    # and a password is no way round it: the portal admin has none
    assert (await _download(gql, admin, batch["id"], password="correct horse battery"))[
        "code"
    ] == "WRONG_PASSWORD"
    # one link was made, by the fresh sign-in alone
    async with rt.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(CardBatchDownload)) == 1


async def test_a_portal_admin_signed_in_long_ago_or_without_auth_time_gets_wrong_password(
    gql, rt, catalog, openid_provider
):
    admin = await _portal_admin(gql, openid_provider, auth_age_seconds=6 * 60)
    batch = await create_batch(gql, admin, quantity=1)
    assert (await _download(gql, admin, batch["id"]))["code"] == "WRONG_PASSWORD"

    no_auth_time = await openid_provider.token("ops-download", roles=["tihuo-admin"])
    admin = SignedInUser(viewer=admin.viewer, password="", token=no_auth_time)
    assert (await _download(gql, admin, batch["id"]))["code"] == "WRONG_PASSWORD"


@pytest.mark.parametrize("auth_time", ["2026-12-02T00:00:00Z", True, 1e20, -1e20])
async def test_an_auth_time_that_is_no_time_signs_in_but_confirms_no_download(
    gql, rt, catalog, openid_provider, auth_time
):
    token = await openid_provider.token("ops-odd", roles=["tihuo-admin"], auth_time=auth_time)
    me = (await gql(ME, headers=bearer(token)))["data"]["me"]
    assert me["role"] == "ADMIN"
    admin = SignedInUser(viewer=Viewer(int(me["id"]), me["username"], Role.ADMIN), password="", token=token)
    batch = await create_batch(gql, admin, quantity=1)
    assert (await _download(gql, admin, batch["id"]))["code"] == "WRONG_PASSWORD"


async def test_a_local_admin_still_needs_the_password_not_a_blank(gql, rt, catalog, admin):
    batch = await create_batch(gql, admin, quantity=1)
    assert (await _download(gql, admin, batch["id"]))["code"] == "WRONG_PASSWORD"
    assert (await _download(gql, admin, batch["id"], admin.password))["__typename"] == "CardBatchDownload"


# --- nothing about tokens in the logs, every field per portal role ---------------------------------


async def test_no_token_reaches_the_logs(gql, rt, caplog, openid_provider):
    # tihuo's own log lines, at their most talkative (the drivers' debug output is not ours)
    caplog.set_level(logging.DEBUG, logger="tihuo")
    good = await openid_provider.token("quiet-1", phone_number="13700007777")
    bad = _signed(await openid_provider.signing_key(), _claims(openid_provider.issuer, aud="urn:other"))
    await gql(ME, headers=bearer(good))
    await gql(ME, headers=bearer(bad))
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tihuo"))
    assert "portal token refused: InvalidAudienceError" in ours
    for secret in (good, bad, good.split(".")[2], bad.split(".")[2], "13700007777"):
        assert secret not in ours


@pytest.mark.parametrize(
    ("root", "name", "audience"), HTTP_FIELDS, ids=[f"{r}.{n}" for r, n, _ in HTTP_FIELDS]
)
async def test_portal_members_and_admins_get_what_each_field_declares(
    gql, openid_provider, root, name, audience
):
    document, variables = _document(root, name)
    users = {
        "member": await openid_provider.token("walk-member"),
        "admin": await openid_provider.token("walk-admin", roles=["tihuo-admin"]),
    }
    for role, token in users.items():
        answer = await gql(document, variables, headers=bearer(token))
        codes = [
            e["extensions"]["code"]
            for e in answer.get("errors", [])
            if e["extensions"]["code"] in ("UNAUTHENTICATED", "FORBIDDEN")
        ]
        expected = EXPECTED[audience][role]
        assert codes == ([expected] if expected else []), (role, document, answer)
