"""Creating users: validation, uniqueness, and no password kept in clear."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import Role, User
from services.accounts import create_user
from services.errors import InvalidInput


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
