"""changePassword through the real ASGI app: a fresh token, every older one dead at once, the old
password checked and rate limited like a login, and nothing changed on any refusal."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from core.security import verify_password
from models import AttemptCounter, AuditEntry, Role, User
from tests.conftest import CLIENT_ADDRESS, make_user

CHANGE_PASSWORD = """
mutation ($input: ChangePasswordInput!) {
  changePassword(input: $input) {
    __typename
    ... on ChangePasswordSuccess { token expiresAt viewer { id username role } }
    ... on InvalidInputError { fieldErrors { field message } }
    ... on RateLimitedError { retryAfterSeconds }
    ... on Error { code message }
  }
}
"""
LOGIN = """
mutation ($username: String!, $password: String!) {
  login(input: {username: $username, password: $password}) { __typename ... on Error { code } }
}
"""
ME = "query { me { id username role } }"
# a field that needs a signed-in user (me, in contrast, is null for a dead token)
REGIONS = "query { regions { code } }"
NEW_PASSWORD = "a brand new password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def user_row(rt, user_id: int) -> User:
    async with rt.db.read() as session:
        return await session.get(User, user_id)


async def audit_rows(rt) -> list[AuditEntry]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


async def test_changing_the_password_returns_a_new_token_and_every_older_one_dies_at_once(
    gql, rt, clock, member
):
    # given a member whose token was just used (so this process remembers it for a few seconds)
    clock.set(clock().replace(microsecond=0))
    assert (await gql(ME, user=member))["data"]["me"]["username"] == "member"
    before = await user_row(rt, member.id)

    # when they change their password
    result = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": member.password, "newPassword": NEW_PASSWORD}}, user=member
    )

    # then they get a fresh token for themselves
    changed = result["data"]["changePassword"]
    assert changed["__typename"] == "ChangePasswordSuccess"
    assert changed["viewer"] == {"id": str(member.id), "username": "member", "role": "MEMBER"}
    assert changed["expiresAt"] == (clock() + timedelta(seconds=rt.settings.token_ttl_seconds)).isoformat()
    # the token of this very request is dead at once, cache or not: me is null, a protected field refused
    assert await gql(ME, user=member) == {"data": {"me": None}}
    refused = await gql(REGIONS, user=member)
    assert refused["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in refused["errors"]] == [
        (["regions"], "UNAUTHENTICATED")
    ]
    # the new token works
    assert await gql(ME, headers=bearer(changed["token"])) == {
        "data": {"me": {"id": str(member.id), "username": "member", "role": "MEMBER"}}
    }
    assert await gql(REGIONS, headers=bearer(changed["token"])) == {"data": {"regions": []}}
    # the new password signs in, the old one no longer does
    old_login = await gql(LOGIN, {"username": "member", "password": member.password})
    assert old_login["data"]["login"] == {"__typename": "WrongPasswordError", "code": "WRONG_PASSWORD"}
    new_login = await gql(LOGIN, {"username": "member", "password": NEW_PASSWORD})
    assert new_login["data"]["login"] == {"__typename": "LoginSuccess"}
    after = await user_row(rt, member.id)
    assert after.token_version == before.token_version + 1
    assert verify_password(rt.hasher, after.password_hash, NEW_PASSWORD)
    # and the change is audited with the member as actor, without any password material
    [entry] = await audit_rows(rt)
    assert (entry.actor_id, entry.action, entry.entity, entry.entity_id, entry.old, entry.new) == (
        member.id,
        "user.change_password",
        "user",
        str(member.id),
        {"token_version": 1},
        {"token_version": 2},
    )
    assert entry.client_address == CLIENT_ADDRESS
    stored = json.dumps([entry.old, entry.new])
    for secret in (member.password, NEW_PASSWORD, before.password_hash, after.password_hash):
        assert secret not in stored


async def test_a_wrong_old_password_is_refused_and_nothing_changes(gql, rt, member):
    before = await user_row(rt, member.id)

    result = await gql(
        CHANGE_PASSWORD,
        {"input": {"oldPassword": "not my password", "newPassword": NEW_PASSWORD}},
        user=member,
    )

    assert result["data"]["changePassword"] == {
        "__typename": "WrongPasswordError",
        "code": "WRONG_PASSWORD",
        "message": "原密码错误。",
    }
    after = await user_row(rt, member.id)
    assert (after.password_hash, after.token_version) == (before.password_hash, before.token_version)
    assert (await gql(ME, user=member))["data"]["me"]["username"] == "member"
    assert await audit_rows(rt) == []
    async with rt.db.read() as session:
        counted = {(c.scope, c.subject, c.failures) for c in await session.scalars(select(AttemptCounter))}
    assert counted == {
        ("change-password", "user:member", 1),
        ("change-password", f"ip:{CLIENT_ADDRESS}", 1),
    }


@pytest.mark.parametrize(
    ("new_password", "message"),
    [
        ("short", "必须在 8 到 1024 之间。"),
        ("x" * 1025, "必须在 8 到 1024 之间。"),
        ("correct horse battery", "新密码不能与原密码相同。"),
    ],
    ids=["too short", "too long", "same as the old one"],
)
async def test_a_bad_new_password_is_refused_and_nothing_changes(gql, rt, member, new_password, message):
    before = await user_row(rt, member.id)
    assert member.password == "correct horse battery"

    result = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": member.password, "newPassword": new_password}}, user=member
    )

    assert result["data"]["changePassword"] == {
        "__typename": "InvalidInputError",
        "code": "INVALID_INPUT",
        "message": "输入有误，请检查标出的字段。",
        "fieldErrors": [{"field": "newPassword", "message": message}],
    }
    after = await user_row(rt, member.id)
    assert (after.password_hash, after.token_version) == (before.password_hash, before.token_version)
    assert (await gql(ME, user=member))["data"]["me"]["username"] == "member"
    assert await audit_rows(rt) == []


async def test_wrong_old_passwords_are_limited_per_user_and_per_address_in_their_own_scope(
    gql, rt, clock, member, admin
):
    # given five wrong old passwords from one member
    clock.set(clock())
    for _ in range(rt.settings.failed_attempt_limit):
        wrong = await gql(
            CHANGE_PASSWORD,
            {"input": {"oldPassword": "wrong password", "newPassword": NEW_PASSWORD}},
            user=member,
        )
        assert wrong["data"]["changePassword"]["code"] == "WRONG_PASSWORD"
    before = await user_row(rt, member.id)

    # when the member, and another user from the same address, try with the right one
    own = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": member.password, "newPassword": NEW_PASSWORD}}, user=member
    )
    other = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": admin.password, "newPassword": NEW_PASSWORD}}, user=admin
    )

    # then both are refused for the window, and nothing changed
    window = rt.settings.failed_attempt_window_seconds
    limited = {
        "__typename": "RateLimitedError",
        "retryAfterSeconds": window,
        "code": "RATE_LIMITED",
        "message": f"尝试次数过多，请 {window} 秒后再试。",
    }
    assert own["data"]["changePassword"] == limited
    assert other["data"]["changePassword"] == limited
    after = await user_row(rt, member.id)
    assert (after.password_hash, after.token_version) == (before.password_hash, before.token_version)
    assert await audit_rows(rt) == []
    # signing in is another scope: it is not blocked by them
    login = await gql(LOGIN, {"username": "member", "password": member.password})
    assert login["data"]["login"] == {"__typename": "LoginSuccess"}
    # after the window the right old password works
    clock.advance(seconds=window + 1)
    again = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": member.password, "newPassword": NEW_PASSWORD}}, user=member
    )
    assert again["data"]["changePassword"]["__typename"] == "ChangePasswordSuccess"


async def test_changing_a_password_needs_a_signed_in_user(gql, rt):
    result = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": "whatever it is", "newPassword": NEW_PASSWORD}}
    )

    assert result["data"] is None
    assert [(e["path"], e["extensions"]["code"], e["message"]) for e in result["errors"]] == [
        (["changePassword"], "UNAUTHENTICATED", "请先登录。")
    ]
    assert await audit_rows(rt) == []


async def test_an_admin_changes_their_own_password_too(gql, rt, admin):
    other = await make_user(rt, "bystander", Role.MEMBER)

    result = await gql(
        CHANGE_PASSWORD, {"input": {"oldPassword": admin.password, "newPassword": NEW_PASSWORD}}, user=admin
    )

    assert result["data"]["changePassword"]["viewer"] == {
        "id": str(admin.id),
        "username": "admin",
        "role": "ADMIN",
    }
    assert await gql(ME, user=admin) == {"data": {"me": None}}
    # nobody else's tokens are touched
    assert (await gql(ME, user=other))["data"]["me"]["username"] == "bystander"
