"""The floor for bench/redeem.py: a bare Strawberry mutation doing one conditional UPDATE and one
INSERT in one transaction on the same database, set up the same way (core.db.Database: WAL,
synchronous=FULL, writes queued onto one connection on SQLite). Served by uvicorn:

    TIHUO_DATABASE_URL=… uvicorn --factory bench.floor_app:create_app

By default through SQLAlchemy (`Database.write()`, the path most of the app takes); with
FLOOR_DRIVER=1 through the drivers themselves (`Database.run_write`, the path a redemption takes).
"""

from __future__ import annotations

import os

import strawberry
from sqlalchemy import bindparam, text
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from core.db import Database
from core.sql import Sql

CLAIM = Sql(
    text("UPDATE floor_cards SET used = 1 WHERE code = :code AND used = 0 RETURNING code").bindparams(
        bindparam("code")
    ),
    reads_only=False,
)
INSERT = Sql(text("INSERT INTO floor_orders (code) VALUES (:code)"), reads_only=False)
TABLES = (
    "CREATE TABLE IF NOT EXISTS floor_cards (code TEXT PRIMARY KEY, used INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS floor_orders (id {serial} PRIMARY KEY, code TEXT NOT NULL)",
)


def create_app() -> Starlette:
    db = Database(os.environ["TIHUO_DATABASE_URL"])

    @strawberry.type
    class Query:
        ok: bool = True

    driver = os.environ.get("FLOOR_DRIVER") == "1"

    def claim_and_insert(code: str):  # a plan (core.sql)
        claimed = yield CLAIM, {"code": code}
        if not claimed:
            return False
        yield INSERT, {"code": code}
        return True

    @strawberry.type
    class Mutation:
        @strawberry.mutation
        async def redeem(self, code: str) -> bool:
            if driver:
                return await db.run_write(lambda _codec: claim_and_insert(code))
            async with db.write() as session:
                claimed = await session.execute(
                    text("UPDATE floor_cards SET used = 1 WHERE code = :code AND used = 0"), {"code": code}
                )
                if claimed.rowcount != 1:
                    return False
                await session.execute(text("INSERT INTO floor_orders (code) VALUES (:code)"), {"code": code})
            return True

    # the same caches the app uses, so the comparison is of the work behind the mutation
    schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=[ParserCache, ValidationCache])
    return Starlette(routes=[Route("/graphql", GraphQL(schema))])


async def prepare(db: Database, codes: list[str]) -> None:
    serial = "INTEGER" if db.is_sqlite else "BIGSERIAL"
    async with db.write() as session:
        for statement in TABLES:
            await session.execute(text(statement.format(serial=serial)))
        await session.execute(text("DELETE FROM floor_orders"))
        await session.execute(text("DELETE FROM floor_cards"))
        await session.execute(
            text("INSERT INTO floor_cards (code) VALUES (:code)"), [{"code": c} for c in codes]
        )
