"""The migrations build exactly the models' schema, on SQLite and on PostgreSQL, and 0003 rebuilds the
users table on SQLite without losing or breaking the rows that reference it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Table, delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.db import Database
from models import AuditEntry, Base, IdempotencyKey, Role, User
from tests.conftest import POSTGRES_URL
from tihuo.migrate import MigrationError, migrate


async def test_migrations_produce_exactly_the_models(database_url):
    # the database fixture was built by running every migration from an empty database
    engine = create_async_engine(database_url)

    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as connection:
        differences = await connection.run_sync(diff)
    await engine.dispose()

    assert differences == []


# --- 0003: users rebuilt with AUTOINCREMENT on SQLite while other rows reference them ---------------


@asynccontextmanager
async def empty_database(backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of the given back-end, set up as the application sets up its own
    (on SQLite: the write engine, foreign keys enforced); on PostgreSQL, a schema of its own in the
    test database, dropped afterwards."""
    if backend == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
        try:
            yield db.write_engine
        finally:
            await db.dispose()
        return
    assert POSTGRES_URL
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {MIGRATION_SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {MIGRATION_SCHEMA}"))
    engine = create_async_engine(
        POSTGRES_URL, connect_args={"server_settings": {"search_path": MIGRATION_SCHEMA}}
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA IF EXISTS {MIGRATION_SCHEMA} CASCADE"))
        await admin.dispose()


MIGRATION_SCHEMA = "tihuo_migration_test"
AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def _user(username: str) -> dict[str, object]:
    return {
        "username": username,
        "password_hash": "$argon2id$not-a-real-hash",
        "role": Role.MEMBER,
        "phone": None,
        "token_version": 1,
        "created_at": AT,
    }


# the users table as 0002 left it (the model has gained a column since)
USERS_0002 = Table(
    "users", MetaData(), *(Column(c.name, c.type) for c in User.__table__.columns if c.name != "disabled_at")
)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_0003_keeps_users_that_other_rows_reference_and_never_reuses_their_ids(backend, tmp_path):
    async with empty_database(backend, tmp_path) as engine:
        # given a database at 0002 with three users: the first referenced by an audit row (ON DELETE
        # RESTRICT), the second by an idempotency key (ON DELETE CASCADE)
        await migrate(engine, "0002")
        async with engine.begin() as connection:
            ids = (
                (
                    await connection.execute(
                        insert(USERS_0002).returning(USERS_0002.c.id),
                        [_user("referenced"), _user("cascading"), _user("newest")],
                    )
                )
                .scalars()
                .all()
            )
            await connection.execute(
                insert(AuditEntry.__table__).values(actor_id=ids[0], action="x.y", entity="x", at=AT)
            )
            await connection.execute(
                insert(IdempotencyKey.__table__).values(
                    member_id=ids[1], key="k1", request_hash=b"\0" * 32, created_at=AT
                )
            )

        # when it is brought to the latest version
        await migrate(engine)

        # then every row is still there, every foreign key holds, and nobody is disabled
        async with engine.connect() as connection:
            users = (await connection.execute(select(User.id, User.username, User.disabled_at))).all()
            assert [tuple(u) for u in users] == [
                (ids[0], "referenced", None),
                (ids[1], "cascading", None),
                (ids[2], "newest", None),
            ]
            assert (await connection.execute(select(AuditEntry.actor_id))).scalars().all() == [ids[0]]
            assert (await connection.execute(select(IdempotencyKey.member_id))).scalars().all() == [ids[1]]
            if backend == "sqlite":
                assert (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all() == []
                # the migration's connection enforces foreign keys again
                assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
                assert await _users_ddl(connection) == await _users_ddl_from_models(tmp_path)

        # and when the newest user is deleted, the next one gets a larger id
        async with engine.begin() as connection:
            await connection.execute(delete(User).where(User.id == ids[2]))
            new_id = (
                await connection.execute(insert(User).values(**_user("next")).returning(User.id))
            ).scalar_one()
        assert new_id > ids[2]

        # and migrating again, at the latest version already, changes nothing
        await migrate(engine)
        async with engine.connect() as connection:
            assert (await connection.execute(select(User.id).order_by(User.id))).scalars().all() == [
                ids[0],
                ids[1],
                new_id,
            ]


async def test_a_sqlite_migration_that_would_leave_a_dangling_foreign_key_commits_nothing(tmp_path):
    # given a database at 0002 holding an audit row whose actor does not exist (written with keys off)
    path = tmp_path / "broken.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(db.write_engine, "0002")
        raw = sqlite3.connect(path)
        raw.execute(
            "INSERT INTO audit_log (actor_id, action, entity, at) VALUES (42, 'x.y', 'x', '2026-11-30')"
        )
        raw.commit()
        raw.close()

        # when it is brought to the latest version, it is refused
        with pytest.raises(MigrationError, match="foreign keys point nowhere"):
            await migrate(db.write_engine)

        # then it is still at 0002, with the users table as it was, and foreign keys enforced again
        async with db.write_engine.connect() as connection:
            assert (
                await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            ).scalar() == "0002"
            assert "AUTOINCREMENT" not in await _users_ddl_text(connection)
            assert "disabled_at" not in await _users_ddl_text(connection)
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await db.dispose()


async def _users_ddl_text(connection) -> str:  # type: ignore[no-untyped-def]
    return (await connection.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'users'")).scalar()


async def _users_ddl(connection) -> set[str]:  # type: ignore[no-untyped-def]
    """The users table's definition on SQLite, as a set of clauses (their order, layout and quoting
    aside: a column added by ALTER TABLE lands on the last column's line)."""
    body = (await _users_ddl_text(connection)).replace('"', "")
    head, _, columns = body.partition("(")
    clauses, depth, clause = [], 0, ""
    for char in columns.rsplit(")", 1)[0]:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            clauses.append(clause)
            clause = ""
        else:
            clause += char
    clauses.append(clause)
    return {head.strip()} | {" ".join(c.split()) for c in clauses}


async def _users_ddl_from_models(tmp_path: Path) -> set[str]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'models.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
            return await _users_ddl(connection)
    finally:
        await engine.dispose()


# --- 0004: batch writes in the audit log are named batch.* -------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_0004_renames_the_batch_actions_of_the_audit_log(backend, tmp_path):
    async with empty_database(backend, tmp_path) as engine:
        await migrate(engine, "0003")
        audit = AuditEntry.__table__
        async with engine.begin() as connection:
            for action, entity in [
                ("card_batch.create", "card_batch"),
                ("card_batch.set_status", "card_batch"),
                ("card_batch.create_download", "card_batch"),
                ("card.set_status", "card"),
            ]:
                await connection.execute(
                    insert(audit).values(action=action, entity=entity, entity_id="7", at=AT)
                )

        await migrate(engine)

        async with engine.connect() as connection:
            rows = (
                await connection.execute(select(audit.c.action, audit.c.entity).order_by(audit.c.id))
            ).all()
    assert [tuple(row) for row in rows] == [
        ("batch.create", "batch"),
        ("batch.set_status", "batch"),
        ("batch.create_download", "batch"),
        ("card.set_status", "card"),
    ]
