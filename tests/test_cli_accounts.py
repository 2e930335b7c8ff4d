"""`tihuo users passwd / disable / enable` on the test database (SQLite or PostgreSQL), with the real
app beside them: earlier tokens die, a disabled user cannot sign in, and each change is audited.

The command line is another process as far as the app is concerned: the app notices its changes
once the short viewer cache lapses, so these tests move the app's clock past token_cache_seconds
(the default, 5 s) rather than turning the cache off."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from core.security import verify_password
from models import AttemptCounter, AuditEntry, User
from tihuo import cli

LOGIN = """
mutation ($username: String!, $password: String!) {
  login(input: {username: $username, password: $password}) {
    __typename
    ... on LoginSuccess { token }
    ... on Error { code message }
  }
}
"""
ME = "query { me { username } }"
NEW_PASSWORD = "a brand new password"
WRONG_PASSWORD = {
    "__typename": "WrongPasswordError",
    "code": "WRONG_PASSWORD",
    "message": "用户名或密码错误。",
}


@pytest.fixture
def cli_env(database_url, tmp_path, monkeypatch):
    """The command line pointed at the test database."""
    monkeypatch.setenv("TIHUO_DATABASE_URL", database_url)
    monkeypatch.setenv("TIHUO_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("TIHUO_PASSWORD_MEMORY_KIB", "64")
    monkeypatch.setenv("TIHUO_PASSWORD_TIME_COST", "1")


async def run_cli(monkeypatch, capsys, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    # in a thread: the command line runs its own event loop
    code = await asyncio.to_thread(cli.main, list(argv))
    output = capsys.readouterr()
    return code, output.out, output.err


async def user_row(rt, username: str) -> User:
    async with rt.db.read() as session:
        return await session.scalar(select(User).where(User.username == username))


async def audit_trail(rt) -> list[tuple[object, ...]]:
    async with rt.db.read() as session:
        entries = await session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.actor_id, e.action, e.entity, e.entity_id, e.old, e.new) for e in entries]


def past_the_viewer_cache(rt, clock) -> None:
    clock.advance(seconds=rt.settings.token_cache_seconds + 1)


async def test_passwd_sets_the_password_kills_earlier_tokens_and_is_audited(
    cli_env, monkeypatch, capsys, gql, rt, clock, member
):
    # given a member whose token works
    clock.set(clock())
    assert await gql(ME, user=member) == {"data": {"me": {"username": "member"}}}
    before = await user_row(rt, "member")

    # when the operator sets a new password
    code, out, err = await run_cli(
        monkeypatch,
        capsys,
        "users",
        "passwd",
        "--username",
        "member",
        "--password-stdin",
        stdin=NEW_PASSWORD + "\n",
    )

    # then it says so without the password
    assert (code, out, err) == (
        0,
        "password of member changed; the user's earlier tokens no longer work\n",
        "",
    )
    # the app, another process, sees it once its short viewer cache lapses: the old token is dead
    past_the_viewer_cache(rt, clock)
    assert await gql(ME, user=member) == {"data": {"me": None}}
    # the old password no longer signs in, the new one does
    assert (await gql(LOGIN, {"username": "member", "password": member.password}))["data"][
        "login"
    ] == WRONG_PASSWORD
    login = (await gql(LOGIN, {"username": "member", "password": NEW_PASSWORD}))["data"]["login"]
    assert login["__typename"] == "LoginSuccess"
    after = await user_row(rt, "member")
    assert after.token_version == before.token_version + 1
    assert verify_password(rt.hasher, after.password_hash, NEW_PASSWORD)
    # audited with no actor and no password material
    assert await audit_trail(rt) == [
        (None, "user.set_password", "user", str(member.id), {"token_version": 1}, {"token_version": 2})
    ]
    async with rt.db.read() as session:
        stored = json.dumps([[e.old, e.new] for e in await session.scalars(select(AuditEntry))])
    for secret in (member.password, NEW_PASSWORD, before.password_hash, after.password_hash):
        assert secret not in stored


async def test_disable_blocks_sign_in_and_kills_tokens_and_enable_lets_in_with_new_tokens_only(
    cli_env, monkeypatch, capsys, gql, rt, clock, member
):
    # given a member whose token works
    clock.set(clock())
    assert await gql(ME, user=member) == {"data": {"me": {"username": "member"}}}

    # when the operator disables them (the command line keeps real time, not the app's test clock)
    started = datetime.now(UTC)
    code, out, err = await run_cli(monkeypatch, capsys, "users", "disable", "--username", "member")
    finished = datetime.now(UTC)

    # then their token is dead and the right password is answered exactly like a wrong one (and counted)
    assert (code, out, err) == (0, "user member disabled; the user's earlier tokens no longer work\n", "")
    past_the_viewer_cache(rt, clock)
    assert await gql(ME, user=member) == {"data": {"me": None}}
    assert (await gql(LOGIN, {"username": "member", "password": member.password}))["data"][
        "login"
    ] == WRONG_PASSWORD
    async with rt.db.read() as session:
        counter = await session.get(AttemptCounter, ("login", "user:member"))
    assert counter.failures == 1
    disabled = await user_row(rt, "member")
    assert started <= disabled.disabled_at <= finished
    assert disabled.token_version == 2

    # disabling again changes nothing
    again = await run_cli(monkeypatch, capsys, "users", "disable", "--username", "member")
    assert again == (0, "user member was already disabled\n", "")

    # when the operator enables them again
    code, out, err = await run_cli(monkeypatch, capsys, "users", "enable", "--username", "member")

    # then they sign in again with a new token, while the one from before the disabling stays dead
    assert (code, out, err) == (0, "user member enabled; tokens from before the disabling stay invalid\n", "")
    login = (await gql(LOGIN, {"username": "member", "password": member.password}))["data"]["login"]
    assert login["__typename"] == "LoginSuccess"
    assert await gql(ME, headers={"Authorization": f"Bearer {login['token']}"}) == {
        "data": {"me": {"username": "member"}}
    }
    assert await gql(ME, user=member) == {"data": {"me": None}}
    enabled = await user_row(rt, "member")
    assert (enabled.disabled_at, enabled.token_version) == (None, 2)
    assert await audit_trail(rt) == [
        (
            None,
            "user.disable",
            "user",
            str(member.id),
            {"disabled": False, "token_version": 1},
            {"disabled": True, "token_version": 2},
        ),
        (None, "user.enable", "user", str(member.id), {"disabled": True}, {"disabled": False}),
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ("users", "passwd", "--username", "ghost", "--password-stdin"),
        ("users", "disable", "--username", "ghost"),
        ("users", "enable", "--username", "ghost"),
    ],
    ids=["passwd", "disable", "enable"],
)
async def test_an_unknown_user_is_one_line_on_stderr_and_exit_1(
    cli_env, monkeypatch, capsys, rt, member, argv
):
    before = await user_row(rt, "member")

    result = await run_cli(monkeypatch, capsys, *argv, stdin=NEW_PASSWORD + "\n")

    assert result == (1, "", "no user named ghost\n")
    after = await user_row(rt, "member")
    assert (after.password_hash, after.token_version, after.disabled_at) == (
        before.password_hash,
        before.token_version,
        None,
    )
    assert await audit_trail(rt) == []


@pytest.mark.parametrize("password", ["short", "x" * 1025], ids=["too short", "too long"])
async def test_passwd_refuses_a_bad_password_and_changes_nothing(
    cli_env, monkeypatch, capsys, gql, rt, clock, member, password
):
    clock.set(clock())
    before = await user_row(rt, "member")

    result = await run_cli(
        monkeypatch,
        capsys,
        "users",
        "passwd",
        "--username",
        "member",
        "--password-stdin",
        stdin=password + "\n",
    )

    assert result == (1, "", "password: field.out_of_range {'min': 8, 'max': 1024}\n")
    after = await user_row(rt, "member")
    assert (after.password_hash, after.token_version) == (before.password_hash, before.token_version)
    assert await audit_trail(rt) == []
    past_the_viewer_cache(rt, clock)
    assert await gql(ME, user=member) == {"data": {"me": {"username": "member"}}}


async def test_passwd_wants_the_password_on_stdin(cli_env, monkeypatch, capsys, rt, member):
    before = await user_row(rt, "member")

    result = await run_cli(monkeypatch, capsys, "users", "passwd", "--username", "member")

    assert result == (2, "", "give the new password on standard input with --password-stdin\n")
    assert (await user_row(rt, "member")).password_hash == before.password_hash
