"""Creating users (validation, uniqueness, no password kept in clear) and the per-process memory of
checked tokens when a user changes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import Role, User
from services.accounts import create_user, set_password, viewer_for_token
from services.errors import InvalidInput
from tests.conftest import make_user


async def test_the_password_is_stored_as_an_argon2id_hash(rt):
    viewer = await create_user(rt, username="alice", password="s3cret password", role=Role.ADMIN)

    async with rt.db.read() as session:
        user = await session.scalar(select(User).where(User.id == viewer.id))
    assert user.password_hash.startswith("$argon2id$")
    assert "s3cret password" not in user.password_hash


async def test_a_taken_username_is_refused_and_nothing_is_added(rt):
    await create_user(rt, username="alice", password="s3cret password", role=Role.ADMIN)

    with pytest.raises(InvalidInput) as refused:
        await create_user(rt, username="alice", password="another password", role=Role.MEMBER)

    assert [(p.field, p.key) for p in refused.value.problems] == [("username", "field.taken")]
    async with rt.db.read() as session:
        assert (await session.scalars(select(User.role))).all() == [Role.ADMIN]


async def test_bad_usernames_and_short_passwords_are_refused_together(rt):
    with pytest.raises(InvalidInput) as refused:
        await create_user(rt, username="a b", password="short", role=Role.MEMBER)

    assert [(p.field, p.key) for p in refused.value.problems] == [
        ("username", "field.bad_format"),
        ("password", "field.out_of_range"),
    ]


async def test_a_change_in_this_process_forgets_only_that_users_remembered_tokens(rt):
    # given two members whose tokens were just checked (and so are remembered)
    first = await make_user(rt, "first", Role.MEMBER)
    second = await make_user(rt, "second", Role.MEMBER)
    assert (await viewer_for_token(rt, first.token)).username == "first"
    assert (await viewer_for_token(rt, second.token)).username == "second"

    # when the first one's password is set
    await set_password(rt, username="first", password="another long password")

    # then only the first one's token is forgotten, and it no longer signs in
    assert rt.viewer_cache.get(first.token) is None
    assert rt.viewer_cache.get(second.token)[0].username == "second"
    assert await viewer_for_token(rt, first.token) is None


async def test_a_token_check_that_read_its_user_before_a_change_does_not_remember_the_answer(rt, monkeypatch):
    # given a token check whose read of the user ends just before the user's password is changed
    # (the database read is wrapped only to fix this interleaving of two concurrent requests)
    user = await make_user(rt, "racing", Role.MEMBER)
    run_read = rt.db.run_read

    async def read_then_change(plan):  # type: ignore[no-untyped-def]
        answer = await run_read(plan)
        await set_password(rt, username="racing", password="another long password")
        return answer

    monkeypatch.setattr(rt.db, "run_read", read_then_change)
    # the check answers for the moment it read (before the change) ...
    assert (await viewer_for_token(rt, user.token)).username == "racing"
    monkeypatch.setattr(rt.db, "run_read", run_read)

    # ... but does not remember it: the next check reads the user again and refuses the token
    assert rt.viewer_cache.get(user.token) is None
    assert await viewer_for_token(rt, user.token) is None
