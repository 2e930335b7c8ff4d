"""Signing in, the viewer, and the failed-login limit, through the real ASGI app."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from core.security import TokenClaims, issue_token
from models import AttemptCounter, Role
from tests.conftest import CLIENT_ADDRESS, make_user

LOGIN = """
mutation Login($username: String!, $password: String!) {
  login(input: {username: $username, password: $password}) {
    __typename
    ... on LoginSuccess { token expiresAt viewer { id username role } }
    ... on RateLimitedError { code message retryAfterSeconds }
    ... on Error { code message }
  }
}
"""
ME = "query { me { id username role } }"


async def test_login_returns_a_token_that_signs_in(gql, rt, clock, member):
    # given a member, at a known moment
    clock.set(clock().replace(microsecond=0))

    # when they sign in
    result = await gql(LOGIN, {"username": "member", "password": member.password})

    # then they get a token valid for the configured time, and it works
    login = result["data"]["login"]
    assert login["__typename"] == "LoginSuccess"
    assert login["viewer"] == {"id": str(member.id), "username": "member", "role": "MEMBER"}
    assert login["expiresAt"] == (clock() + timedelta(seconds=rt.settings.token_ttl_seconds)).isoformat()
    me = await gql(ME, headers={"Authorization": f"Bearer {login['token']}"})
    assert me == {"data": {"me": {"id": str(member.id), "username": "member", "role": "MEMBER"}}}


async def test_me_is_null_when_signed_out_or_the_token_is_bad(gql, rt, member):
    assert await gql(ME) == {"data": {"me": None}}
    forged = member.token[:-2] + ("AA" if not member.token.endswith("AA") else "BB")
    assert await gql(ME, headers={"Authorization": f"Bearer {forged}"}) == {"data": {"me": None}}
    expired = issue_token(rt.keys.token, TokenClaims(member.id, 1, rt.now() - timedelta(seconds=1)))
    assert await gql(ME, headers={"Authorization": f"Bearer {expired}"}) == {"data": {"me": None}}


async def test_wrong_password_and_unknown_user_get_the_same_answer(gql, member):
    wrong = await gql(LOGIN, {"username": "member", "password": "nope nope"})
    unknown = await gql(LOGIN, {"username": "nobody", "password": "nope nope"})
    expected = {"__typename": "WrongPasswordError", "code": "WRONG_PASSWORD", "message": "用户名或密码错误。"}
    assert wrong["data"]["login"] == expected
    assert unknown["data"]["login"] == expected


async def test_messages_follow_accept_language(gql, member):
    result = await gql(
        LOGIN, {"username": "member", "password": "nope nope"}, headers={"Accept-Language": "en-US,en;q=0.9"}
    )
    assert result["data"]["login"]["message"] == "Wrong username or password."


async def test_five_wrong_passwords_lock_the_username_even_for_the_right_one(gql, rt, clock, member):
    clock.set(clock())
    for _ in range(5):
        result = await gql(LOGIN, {"username": "member", "password": "wrong password"})
        assert result["data"]["login"]["code"] == "WRONG_PASSWORD"

    locked = await gql(LOGIN, {"username": "member", "password": member.password})
    assert locked["data"]["login"]["__typename"] == "RateLimitedError"
    assert locked["data"]["login"]["code"] == "RATE_LIMITED"
    assert locked["data"]["login"]["retryAfterSeconds"] == rt.settings.failed_attempt_window_seconds

    # after the block the right password works again
    clock.advance(seconds=rt.settings.failed_attempt_window_seconds + 1)
    again = await gql(LOGIN, {"username": "member", "password": member.password})
    assert again["data"]["login"]["__typename"] == "LoginSuccess"


async def test_the_block_doubles_when_failures_go_on(gql, rt, clock, member):
    window = rt.settings.failed_attempt_window_seconds
    clock.set(clock())
    for _ in range(5):
        await gql(LOGIN, {"username": "member", "password": "wrong password"})
    clock.advance(seconds=window + 1)
    for _ in range(5):
        await gql(LOGIN, {"username": "member", "password": "wrong password"})

    locked = await gql(LOGIN, {"username": "member", "password": member.password})
    assert locked["data"]["login"]["retryAfterSeconds"] == 2 * window


async def test_the_client_address_is_limited_across_usernames(gql, rt, member):
    for index in range(5):
        await gql(LOGIN, {"username": f"guess{index}", "password": "wrong password"})

    result = await gql(LOGIN, {"username": "member", "password": member.password})

    assert result["data"]["login"]["code"] == "RATE_LIMITED"
    async with rt.db.read() as session:
        blocked = await session.scalar(
            select(func.count())
            .select_from(AttemptCounter)
            .where(
                AttemptCounter.subject == f"ip:{CLIENT_ADDRESS}", AttemptCounter.blocked_until.is_not(None)
            )
        )
    assert blocked == 1


async def test_a_successful_login_forgets_earlier_failures(gql, member):
    for _ in range(4):
        await gql(LOGIN, {"username": "member", "password": "wrong password"})
    assert (await gql(LOGIN, {"username": "member", "password": member.password}))["data"]["login"][
        "__typename"
    ] == "LoginSuccess"
    for _ in range(4):
        result = await gql(LOGIN, {"username": "member", "password": "wrong password"})
        assert result["data"]["login"]["code"] == "WRONG_PASSWORD"


async def test_tokens_of_a_user_whose_token_version_changed_stop_working(gql, rt):
    user = await make_user(rt, "rotated", Role.MEMBER)
    from models import User

    async with rt.db.write() as session:
        (await session.get(User, user.id)).token_version = 2

    assert await gql(ME, user=user) == {"data": {"me": None}}


async def test_a_revoked_token_stops_working_once_the_short_viewer_cache_lapses(gql, rt, clock):
    # given a signed-in member whose token was just used (and so is remembered for a few seconds)
    clock.set(clock())
    user = await make_user(rt, "revoked", Role.MEMBER)
    assert (await gql(ME, user=user))["data"]["me"]["username"] == "revoked"
    from models import User

    # when their tokens are revoked
    async with rt.db.write() as session:
        (await session.get(User, user.id)).token_version = 2

    # then the token works at most token_cache_seconds longer
    assert (await gql(ME, user=user))["data"]["me"]["username"] == "revoked"
    clock.advance(seconds=rt.settings.token_cache_seconds + 1)
    assert await gql(ME, user=user) == {"data": {"me": None}}


async def test_a_deleted_users_id_is_never_given_again_and_their_token_signs_in_nobody(gql, rt, clock):
    # given two members, the newer one (with the largest id) signed in through login
    clock.set(clock().replace(microsecond=0))
    await make_user(rt, "older", Role.MEMBER)
    doomed = await make_user(rt, "doomed", Role.MEMBER)
    login = (await gql(LOGIN, {"username": "doomed", "password": doomed.password}))["data"]["login"]
    old_token = {"Authorization": f"Bearer {login['token']}"}
    assert (await gql(ME, headers=old_token))["data"]["me"]["username"] == "doomed"
    from models import User

    # when their row is deleted (outside the services, so past the short viewer cache) and a new user made
    async with rt.db.write() as session:
        await session.delete(await session.get(User, doomed.id))
    clock.advance(seconds=rt.settings.token_cache_seconds + 1)
    newcomer = await make_user(rt, "newcomer", Role.MEMBER)

    # then the newcomer gets a larger id, and the deleted user's token signs in nobody
    assert newcomer.id > doomed.id
    assert await gql(ME, headers=old_token) == {"data": {"me": None}}
    assert (await gql(ME, user=newcomer))["data"]["me"]["username"] == "newcomer"


async def test_a_disabled_users_token_signs_in_nobody_even_with_its_version_unchanged(gql, rt, clock):
    # given a member whose token works
    clock.set(clock())
    user = await make_user(rt, "paused", Role.MEMBER)
    assert (await gql(ME, user=user))["data"]["me"]["username"] == "paused"
    from models import User

    # when the row is marked disabled without touching token_version (as a bare UPDATE would)
    async with rt.db.write() as session:
        (await session.get(User, user.id)).disabled_at = clock()
    clock.advance(seconds=rt.settings.token_cache_seconds + 1)

    # then the token no longer signs in
    assert await gql(ME, user=user) == {"data": {"me": None}}
